"""The local transformers backend on a tiny random LLaVA: batching, log-probabilities, the cache, and
the paper's and the common-words explainers over it."""

from __future__ import annotations

import pytest
import torch

from records import make_records  # noqa: E402
from lmmsae.backends.base import Answer, Query  # noqa: E402
from lmmsae.backends.cache import ResponseCache, request_key  # noqa: E402
from lmmsae.backends.local import LocalBackend  # noqa: E402
from lmmsae.errors import UserError  # noqa: E402
from lmmsae.explainers.common_words import CommonWordsExplainer  # noqa: E402
from lmmsae.explainers.paper import PaperExplainer  # noqa: E402
from tiny_llava import build_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    return str(build_tiny_llava(tmp_path_factory.mktemp("tiny-llava")))


def backend_options(checkpoint, **options):
    return {"checkpoint": checkpoint, "max_new_tokens": 5, "device": "cpu", **options}


def backend(checkpoint, cache=None, **options):
    return LocalBackend(LocalBackend.Options(**backend_options(checkpoint, **options)), name="local", cache=cache)


def paper(checkpoint, cache=None, backend_opts=None, **options):
    opts = PaperExplainer.parse_options({"backend": "transformers", **backend_options(checkpoint, **(backend_opts or {})),
                                         **options}, "explainer 'local'")
    return PaperExplainer(opts, name="local", cache=cache)


def test_batched_answers_equal_one_at_a_time(checkpoint):
    """Left padding: prompts of different lengths answer the same in a batch as alone."""
    x = backend(checkpoint, batch_size=4, chat_template=False)
    image = make_records(["red"])[0].examples[0].image
    requests = [([image], "<image> is there a red circle ?"), ([image], "<image>"),
                ([image, image], "<image> <image> a large red circle at the top left"), ([], "a red")]
    batched = x.ask_many(requests)
    assert x.stats["batches"] == 1
    alone = [x.ask(images, prompt) for images, prompt in requests]
    assert batched == alone
    assert all(isinstance(a, str) for a in batched)


def test_yes_probability_is_the_softmax_of_the_next_token_logits(checkpoint):
    from lmmsae.toyworld.vocab import VOCAB

    x = backend(checkpoint, chat_template=False, top_logprobs=100)  # every token of the toy vocabulary
    image = make_records(["red"])[0].examples[0].image
    prompt = "<image> is there a red circle ?"
    p = x.yes_probability([image], prompt)
    inputs = x.processor(text=[prompt], images=[image.convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        logits = x.lmm(**inputs).logits[0, -1].double()
    yes, no = logits[VOCAB["yes"]].exp(), logits[VOCAB["no"]].exp()
    assert p == pytest.approx(float(yes / (yes + no)), abs=1e-5)
    assert 0 < p < 1


def test_log_probabilities_come_back_from_the_cache(checkpoint, tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    image = make_records(["red"])[0].examples[0].image
    first = backend(checkpoint, cache=cache, chat_template=False).yes_probability([image], "<image> is there a red ?")
    again = backend(checkpoint, cache=cache, chat_template=False)
    assert again.yes_probability([image], "<image> is there a red ?") == first
    assert again.lmm is None and again.stats["cache_hits"] == 1  # never even loaded


def test_common_words_batches_every_image_of_several_features_and_aggregates(checkpoint, tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    opts = CommonWordsExplainer.parse_options({"backend": "transformers", "n_images": 3, "per_image_prompt": "<image>",
                                               **backend_options(checkpoint, chat_template=False, batch_size=8)},
                                              "explainer 'local'")
    records = make_records(["red", "blue"])
    x = CommonWordsExplainer(opts, name="local", cache=cache)
    out = list(x.explain(records))
    assert x.backend.stats == {"requests": 6, "retries": 0, "cache_hits": 0, "batches": 1}  # 2 features x 3 images
    assert all(len(e.meta["descriptions"]) == 3 for e in out)
    # the descriptions a model gave decide the explanation: put known ones in the cache under the same requests
    described = ["a large red circle at the top", "a small red circle in the center", "a small red square",
                 "a blue star", "a red cross", "a green circle"]
    queries = [Query([e.image], "<image>") for r in records for e in r.examples[:3]]
    for query, text in zip(queries, described):
        cache.put(request_key(x.backend.model_identity(), query), checkpoint, Answer(text=text))
    again = CommonWordsExplainer(opts, name="local", cache=cache)
    out = {e.latent: e for e in again.explain(records)}
    assert again.backend.lmm is None  # every description came from the cache
    assert out[0].status == "ok" and out[0].text == "red"  # 3 of 3 say red; circle only 2 of 3 (< 0.8)
    assert out[0].meta["descriptions"] == described[:3]
    assert out[1].status == "failed" and "no word is shared by 3 of the 3" in out[1].reason


def test_the_paper_prompt_runs_the_real_model_and_records_every_feature(checkpoint, tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    x = paper(checkpoint, cache=cache, backend_opts={"batch_size": 2}, answer_format="plain")
    records = make_records(["red", "green", "blue"])
    records[2].examples = []
    out = sorted(x.explain(records), key=lambda e: e.latent)
    assert [e.latent for e in out] == [0, 1, 2]
    assert out[2].status == "failed" and "no example images" in out[2].reason
    assert all(e.status == "ok" and e.text == e.meta["answer"] for e in out[:2])
    assert len(cache) == 2
    again = paper(checkpoint, cache=cache, backend_opts={"batch_size": 2}, answer_format="plain")
    assert sorted(e.text for e in again.explain(records[:2])) == sorted(e.text for e in out[:2])
    assert again.backend.lmm is None  # never even loaded


def test_tagged_answers_from_a_random_model_fail_with_their_reason(checkpoint):
    out = list(paper(checkpoint).explain(make_records(["red"])))
    assert out[0].status == "failed" and out[0].reason.startswith("no [EXPLANATION]: line")


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint"):
        LocalBackend(LocalBackend.Options())
    with pytest.raises(UserError, match="checkpoint folder .* does not exist"):
        list(paper(str(tmp_path / "nothing-here")).explain(make_records(["red"])))


def test_a_generation_error_fails_those_features_only(checkpoint):
    x = paper(checkpoint, backend_opts={"batch_size": 1, "generate_kwargs": {"num_beams": 0}}, answer_format="plain")
    out = list(x.explain(make_records(["red", "green"])))
    assert [e.status for e in out] == ["failed", "failed"]
    assert all(e.reason.startswith("ZeroDivisionError") for e in out), out[0].reason  # generate() with 0 beams
