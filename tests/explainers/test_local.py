"""The local transformers explainer on a tiny random LLaVA: batching, both aggregations, the cache."""

from __future__ import annotations

import pytest
import torch

from records import make_records  # noqa: E402
from lmmsae.errors import UserError  # noqa: E402
from lmmsae.explainers.cache import ResponseCache  # noqa: E402
from lmmsae.explainers.local import LocalExplainer  # noqa: E402
from tiny_llava import build_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    return str(build_tiny_llava(tmp_path_factory.mktemp("tiny-llava")))


def explainer(checkpoint, cache=None, **options):
    base = dict(checkpoint=checkpoint, max_new_tokens=5, device="cpu")
    return LocalExplainer(LocalExplainer.Options(**{**base, **options}), name="local", cache=cache)


def test_batched_answers_equal_one_at_a_time(checkpoint):
    """Left padding: prompts of different lengths answer the same in a batch as alone."""
    x = explainer(checkpoint, batch_size=4, chat_template=False)
    image = make_records(["red"])[0].examples[0].image
    requests = [([image], "<image> is there a red circle ?"), ([image], "<image>"),
                ([image, image], "<image> <image> a large red circle at the top left"), ([], "a red")]
    batched = x.ask_many(requests)
    alone = [x.ask(images, prompt) for images, prompt in requests]
    assert batched == alone
    assert all(isinstance(a, str) for a in batched)


def test_common_words_explains_from_per_image_descriptions(checkpoint, monkeypatch):
    x = explainer(checkpoint, aggregate="common-words", per_image_prompt="<image>", chat_template=False,
                  system_prompt="", answer_format="plain", batch_size=8, n_images=3)
    described = iter(["a large red circle at the top", "a small red circle in the center", "a small red square",
                      "a blue star", "a red cross", "a green circle"])
    calls = []

    def fake_batch(queries):
        calls.append(len(queries))
        assert all(len(q.images) == 1 and q.prompt == "<image>" for q in queries)
        return [next(described) for _ in queries]

    monkeypatch.setattr(x, "_run_batch", fake_batch)
    x.load()
    out = list(x.explain(make_records(["red", "blue"])))
    assert calls == [6]  # 2 features x 3 images in one batch
    assert out[0].status == "ok" and out[0].text == "red"  # 3 of 3 say red; circle only 2 of 3 (< 0.8)
    assert out[0].meta["descriptions"][:2] == ["a large red circle at the top", "a small red circle in the center"]
    assert out[1].status == "failed" and "no word is shared by 3 of the 3" in out[1].reason


def test_multi_image_prompt_runs_the_real_model_and_records_every_feature(checkpoint, tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    x = explainer(checkpoint, cache=cache, batch_size=2, answer_format="plain")
    records = make_records(["red", "green", "blue"])
    records[2].examples = []
    out = list(x.explain(records))
    assert [e.latent for e in out] == [0, 1, 2]
    assert out[2].status == "failed" and "no example images" in out[2].reason
    assert all(e.status == "ok" and e.text == e.meta["answer"] for e in out[:2])
    assert len(cache) == 2
    again = explainer(checkpoint, cache=cache, batch_size=2, answer_format="plain")
    again._run_batch = lambda queries: pytest.fail("answers must come from the cache")
    assert [e.text for e in again.explain(records[:2])] == [e.text for e in out[:2]]
    assert again.model is None  # never even loaded


def test_tagged_answers_from_a_random_model_fail_with_their_reason(checkpoint):
    out = list(explainer(checkpoint).explain(make_records(["red"])))
    assert out[0].status == "failed" and out[0].reason.startswith("no [EXPLANATION]: line")


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint"):
        LocalExplainer(LocalExplainer.Options())
    x = explainer(str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="checkpoint folder .*nothing-here' does not exist"):  # as for models
        list(x.explain(make_records(["red"])))
