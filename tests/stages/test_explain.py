"""The explain and compare stages on an oracle features.h5, with an OpenAI-compatible explainer
served by the local fake server: records, resume, retries of failed features, refining, no key on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "explainers"))

from fake_lmm_server import FakeLMMServer, default_responder  # noqa: E402
from truth_features import DATASET, write_truth_features  # noqa: E402

from lmmsae import artifacts  # noqa: E402

SECRET = "sk-stage-test-secret-42"
REL = "explanations/openai-compatible.jsonl"


def liar_or_honest(body):
    answer = default_responder(body)
    if body["model"] == "liar":
        return answer.replace("red", "green").replace("blue", "yellow")
    return answer


@pytest.fixture
def server():
    s = FakeLMMServer(responder=liar_or_honest).start()
    yield s
    s.stop()


@pytest.fixture
def make_ctx(tmp_path, server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", SECRET)
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.rundir import RunDir

    run = RunDir.create(tmp_path / "runs", "r")
    write_truth_features(run.file(artifacts.FEATURES),
                         ShapesDataset(ShapesDataset.Options(**{k: v for k, v in DATASET.items() if k != "name"})))
    explainer = {"name": "openai-compatible", "model": "honest", "base_url": server.url + "/v1",
                 "api_key_env": "TEST_KEY", "backoff": 0.01, "concurrency": 2}

    def make(**overrides):
        config = resolve(overrides=[("dataset", dict(DATASET)), ("explainer", dict(explainer)),
                                    ("scorers", [{"name": "iou", "baseline_draws": 4}]),
                                    *[(k, v) for k, v in overrides.items()]])
        ctx = RunContext(config, run)
        if run.state(artifacts.FEATURES) is None:
            ctx.adopt(artifacts.FEATURES)
        return ctx

    return make


def interrupt(run, rel):
    """What a crash leaves: the state record still says running."""
    state = json.loads(run.file(rel + artifacts.STATE_SUFFIX).read_text())
    run.file(rel + artifacts.STATE_SUFFIX).write_text(json.dumps({**state, "status": "running"}))


def records(path):
    from lmmsae.explainers.store import read_explanations

    return {lat: e for (_, lat), e in read_explanations(path).items()}


def no_secret_anywhere(root: Path):
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_explain_writes_every_feature_resumes_and_never_pays_twice(make_ctx, server):
    from lmmsae.stages import explain

    ctx = make_ctx(**{"explain.n_features": 0})
    explain.run(ctx)
    out = records(ctx.run.file(REL))
    assert sorted(out) == [0, 1, 2, 3] and all(e.status == "ok" or e.reason for e in out.values())
    assert out[0].text == "red regions" and out[2].text == "blue regions"  # latents 0/2 fire on red/blue objects
    assert out[0].meta["n_images"] == 5 and out[0].explainer == "openai-compatible"
    sent = len(server.log)
    assert 4 <= sent <= 6 and ctx.run.is_complete(REL)
    identity = json.loads(ctx.run.file("explanations/openai-compatible.json").read_text())
    backend = identity["options"]["backend_options"]
    assert identity["options"]["backend"] == "openai-compatible"
    assert backend["model"] == "honest" and backend["api_key_env"] == "TEST_KEY"

    # a crash: the completion marker never written, the file cut inside the third record
    path = ctx.run.file(REL)
    text = path.read_text().splitlines()
    path.write_text(text[0] + "\n" + text[1] + "\n" + text[2][:30])
    interrupt(ctx.run, REL)
    explain.run(make_ctx(**{"explain.n_features": 0}))
    again = records(path)
    assert sorted(again) == [0, 1, 2, 3] and [again[i].text for i in range(4)] == [out[i].text for i in range(4)]
    assert len(server.log) == sent  # the re-asked features came from the response cache
    explain.run(make_ctx(**{"explain.n_features": 0}))  # complete: skipped
    assert len(server.log) == sent
    no_secret_anywhere(ctx.run.path)


def test_failed_requests_are_recorded_and_asked_again_on_resume(make_ctx, server):
    from lmmsae.stages import explain

    server.inject("400")
    ctx = make_ctx(**{"explain.latents": [0, 2], "explainer.concurrency": 1})
    explain.run(ctx)
    out = records(ctx.run.file(REL))
    assert out[0].status == "failed" and "400" in out[0].reason and out[0].text is None
    assert SECRET not in out[0].reason  # the server echoed the key back in its error
    assert out[2].status == "ok"
    info = ctx.run.state(REL)["info"]
    assert info["failed"] == 1 and info["retry"] == 1  # the request failed: worth asking again
    again = make_ctx(**{"explain.latents": [0, 2], "explainer.concurrency": 1})
    assert again.units("explain")[0].status == "resume"
    explain.run(again)
    assert len(server.log) == 3 and records(ctx.run.file(REL))[0].text == "red regions"
    done = make_ctx(**{"explain.latents": [0, 2], "explainer.concurrency": 1})
    assert done.units("explain")[0].status == "current"
    no_secret_anywhere(ctx.run.path)


def test_refiner_labels_explanations_through_the_same_backend(make_ctx, server):
    from lmmsae.stages import explain

    ctx = make_ctx(**{"explain.latents": [0, 2], "explain.refiner": "self"})
    explain.run(ctx)
    out = records(ctx.run.file(REL))
    assert [out[i].label for i in (0, 2)] == ["a label", "a label"]
    refine_prompts = [e["body"]["messages"][-1]["content"] for e in server.log if len(server.log) and
                      isinstance(e["body"]["messages"][-1]["content"], list) and
                      not any(p["type"] == "image_url" for p in e["body"]["messages"][-1]["content"])]
    assert len(refine_prompts) == 2 and "red regions" in json.dumps(refine_prompts)


def test_compare_scores_explainers_side_by_side(make_ctx, server):
    from lmmsae.stages import compare

    base = {"name": "openai-compatible", "base_url": server.url + "/v1", "api_key_env": "TEST_KEY",
            "backoff": 0.01}
    ctx = make_ctx(**{"compare.latents": [0, 2],
                      "compare.explainers": [{**base, "id": "honest", "model": "honest"},
                                             {**base, "id": "liar", "model": "liar"}]})
    compare.run(ctx)
    summary = json.loads(ctx.run.file(artifacts.COMPARE_SUMMARY).read_text())
    rows = {r["id"]: r for r in summary["explainers"]}
    assert summary["scorers"] == ["iou"] and summary["features"] == 2
    assert rows["honest"]["ok"] == rows["liar"]["ok"] == 2
    honest, liar = rows["honest"]["scores"]["iou"]["common"], rows["liar"]["scores"]["iou"]["common"]
    assert honest["n"] == liar["n"] == 2
    assert honest["score"] > 0.3 > liar["score"] and honest["delta"] > liar["delta"]
    labels = [json.loads(x)["text"] for x in ctx.run.file("compare/explanations/liar.jsonl").read_text().splitlines()]
    assert sorted(labels) == ["green regions", "yellow regions"]
    assert len(server.log) == 4
    page = ctx.run.file(artifacts.COMPARE_HTML).read_text()
    assert "<td>honest</td><td>2</td><td>0</td>" in page and "<td>liar</td>" in page
    compare.run(ctx)  # complete: prints the table again, asks nothing
    assert len(server.log) == 4


def test_compare_needs_explainers(make_ctx):
    from lmmsae.errors import UserError
    from lmmsae.stages import compare

    with pytest.raises(UserError, match="--explainers"):
        compare.run(make_ctx())


def test_compare_resume_runs_only_new_explainers_and_scorers(make_ctx, server):
    from lmmsae.stages import compare

    base = {"name": "openai-compatible", "base_url": server.url + "/v1", "api_key_env": "TEST_KEY",
            "backoff": 0.01}
    honest, liar = {**base, "id": "honest", "model": "honest"}, {**base, "id": "liar", "model": "liar"}
    compare.run(make_ctx(**{"compare.latents": [0, 2], "compare.explainers": [honest]}))
    assert len(server.log) == 2
    ctx = make_ctx(**{"compare.latents": [0, 2], "compare.explainers": [honest, liar]})
    compare.run(ctx)  # --resume with one more explainer: liar runs, honest is not even loaded
    summary = json.loads(ctx.run.file(artifacts.COMPARE_SUMMARY).read_text())
    assert [r["id"] for r in summary["explainers"]] == ["honest", "liar"]
    assert all(r["ok"] == 2 and r["scores"]["iou"]["common"]["n"] == 2 for r in summary["explainers"])
    assert len(server.log) == 4
    events = [json.loads(x) for x in ctx.run.file(artifacts.EVENTS).read_text().splitlines()]
    skipped = [e["path"] for e in events if e["event"] == "stage-skip" and "explanations" in e.get("path", "")]
    assert skipped == ["compare/explanations/honest.jsonl"]
    assert [e["explainer"] for e in events if e["event"] == "explain-start"] == ["honest", "liar"]
    iou = ctx.run.file("compare/scores/iou/honest.jsonl")
    scored = iou.read_text()

    # one more scorer: only the new (scorer, explainer) pairs are scored, then everything re-summarised
    ctx = make_ctx(**{"compare.latents": [0, 2], "compare.explainers": [honest, liar],
                      "compare.scorers": [{"name": "iou", "baseline_draws": 4}, {"name": "iou", "baseline_draws": 2}]})
    compare.run(ctx)
    summary = json.loads(ctx.run.file(artifacts.COMPARE_SUMMARY).read_text())
    assert summary["scorers"] == ["iou", "iou-1"] and len(server.log) == 4 and iou.read_text() == scored
    from lmmsae.scorers.store import read_scores

    assert all(len(read_scores(ctx.run.file(f"compare/scores/iou-1/{i}.jsonl"))) == 2 for i in ("honest", "liar"))
    assert all(r["scores"]["iou-1"]["common"]["n"] == 2 for r in summary["explainers"])
    marker = ctx.run.state(artifacts.COMPARE_SUMMARY)["info"]
    assert marker["explainers"] == ["honest", "liar"] and marker["scorers"] == ["iou", "iou-1"]
    compare.run(ctx)  # the same request again: skipped outright
    events = [json.loads(x) for x in ctx.run.file(artifacts.EVENTS).read_text().splitlines()]
    assert events[-1]["event"] == "stage-skip" and len(server.log) == 4


def test_explain_and_compare_refuse_an_incomplete_features_file(make_ctx, tmp_path):
    import shutil

    import h5py

    from lmmsae.errors import UserError
    from lmmsae.stages import compare, explain

    ctx = make_ctx(**{"compare.explainers": ["toy-llava"]})
    features = ctx.run.file(artifacts.FEATURES)
    interrupt(ctx.run, artifacts.FEATURES)  # a cache killed part-way
    for stage in (explain, compare):
        with pytest.raises(UserError, match=r"features.h5 is not current \(resume: interrupted\): run `lmmsae "
                                            r"cache --resume --name r` first"):
            stage.run(make_ctx(**{"compare.explainers": ["toy-llava"]}))

    # another run's features.h5, by path: its `complete` attribute decides (else its marker beside it)
    other = tmp_path / "other" / "cache" / "features.h5"
    other.parent.mkdir(parents=True)
    shutil.copy(features, other)
    with h5py.File(other, "a") as f:
        f.attrs["complete"] = False
    for stage in ("explain", "compare"):
        bad = make_ctx(**{f"{stage}.features": str(other), "compare.explainers": ["toy-llava"]})
        with pytest.raises(UserError, match=r"is incomplete .*`lmmsae cache --resume --name other --out "):
            {"explain": explain, "compare": compare}[stage].run(bad)
    with h5py.File(other, "a") as f:
        f.attrs["complete"] = True
    assert explain.features_path(ctx, str(other)) == other
    with h5py.File(other, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(UserError, match="incomplete"):
        explain.features_path(ctx, str(other))
    other.with_name("features.h5.state.json").write_text('{"status": "complete"}\n')
    assert explain.features_path(ctx, str(other)) == other
