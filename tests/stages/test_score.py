import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "scorers"))

from scorer_helpers import make_tiny_clip  # noqa: E402
from truth_features import ATTRIBUTES, RIGHT, make_run  # noqa: E402

from lmmsae import artifacts  # noqa: E402

@pytest.fixture
def run_ctx(tmp_path):
    name, weights = make_tiny_clip(tmp_path)
    return make_run(tmp_path, [{"name": "iou", "baseline_draws": 6},
                               {"name": "clip", "model": name, "pretrained": weights, "baseline_draws": 3}])


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_score_stage_writes_records_per_scorer_and_explainer_and_right_beats_wrong(run_ctx):
    from lmmsae.stages import score

    score.run(run_ctx)
    run = run_ctx.run
    right = {r["latent"]: r for r in lines(run.file("scores/iou/right.jsonl"))}
    wrong = {r["latent"]: r for r in lines(run.file("scores/iou/wrong.jsonl"))}
    assert sorted(right) == [0, 1, 2, 3, 4]
    assert right[4]["status"] == "skipped" and right[4]["score"] is None
    for latent in range(len(ATTRIBUTES)):
        r = right[latent]
        assert r["label"] == RIGHT[latent] and r["scorer"] == "iou" and r["explainer"] == "right"
        assert r["n"] == 5 and len(r["images"]) == 5 and r["model"] == {"regions": "ground truth masks"}
        assert r["score"] > r["baseline_mean"] + 0.1 and r["score"] > wrong[latent]["score"] + 0.1
        assert r["baseline"]["kind"] == "random-labels" and r["scorer_options"]["baseline_draws"] == 6
    clip = lines(run.file("scores/clip/right.jsonl"))
    assert len(clip) == 5 and clip[0]["baseline"]["draws"] == 3 and clip[0]["model"]["pretrained"].endswith("tiny.safetensors")
    cats = {r["latent"]: r["categories"] for r in lines(run.file("categories/right.jsonl"))}
    assert cats == {0: ["colour"], 1: ["shape"], 2: ["colour"], 3: ["position"]}
    assert run.is_complete("scores/iou/right.jsonl") and run.is_complete("categories/right.jsonl")


def test_score_stage_resumes_by_latent_after_a_torn_write(run_ctx):
    from lmmsae.stages import score

    score.run(run_ctx)
    path = run_ctx.run.file("scores/iou/right.jsonl")
    full = path.read_text().splitlines()
    path.write_text("\n".join(full[:2]) + "\n" + full[2][:25])      # two records kept, the third torn
    state = run_ctx.run.file("scores/iou/right.jsonl" + artifacts.STATE_SUFFIX)
    state.write_text(json.dumps({**json.loads(state.read_text()), "status": "running"}))  # the crash
    from lmmsae.context import RunContext

    score.run(RunContext(run_ctx.config, run_ctx.run))
    again = lines_tolerant(path)
    assert [r["latent"] for r in again] == [0, 1, 2, 3, 4]
    assert [r["score"] for r in again] == [json.loads(x)["score"] for x in full]


def lines_tolerant(path):
    out = []
    for x in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(x))
        except ValueError:
            pass
    return out


def test_score_stage_without_a_cache_says_what_to_run(tmp_path):
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.errors import UserError
    from lmmsae.rundir import RunDir
    from lmmsae.stages import score

    ctx = RunContext(resolve(), RunDir.create(tmp_path, "empty"))
    with pytest.raises(UserError, match="lmmsae cache"):
        score.run(ctx)
