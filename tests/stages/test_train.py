"""train: a killed and resumed training equals an uninterrupted one, without replaying the data."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmmsae.saes.topk import TopKSAE
from lmmsae.stages.train import Options, model_batches, reader_batches, sae_specs, train
from lmmsae.stores.activations import TOKEN_COLUMNS, ActivationReader, ActivationWriter

sys.path.insert(0, str(Path(__file__).parents[1] / "cache"))
from fakes import D_MODEL, FakeAdapter, RandomImages  # noqa: E402

D = 16


def activations(path, n=1500):
    g = np.random.default_rng(0)
    with ActivationWriter(path, {"h": D}, "float32", {"model": "m"}, chunk_bytes=64 * D * 4) as w:
        for i in range(0, n, 100):
            tokens = {c: np.zeros(100, dt) for c, dt in TOKEN_COLUMNS.items()}
            tokens["box"] = np.zeros((100, 4), np.float32)
            x = torch.from_numpy(g.standard_normal((100, D), dtype=np.float32))
            w.append({"h": x}, tokens, [{"index": i, "id": i, "token_count": 100}], [], i + 1)
        w.finish()
    return ActivationReader(path)


class Killed(Exception):
    pass


def killed_after(batches, n, seen):
    """`batches`, but the process 'dies' when batch n + 1 is asked for; records each cursor it is given."""
    def make(cursor):
        seen.append(cursor)
        for i, pair in enumerate(batches(cursor)):
            if i == n:
                raise Killed
            yield pair
    return make


def weights(root, name):
    return load_file(str(root / name / "sae.safetensors"))


def run(batches, dims, root, options, resume=True):
    torch.manual_seed(0)  # the SAE's initial weights (the stage seeds every generator from --seed)
    specs = sae_specs("topk", TopKSAE.Options(n_latents=64, k=4), [])
    return train(batches, dims, specs, root, options, resume=resume)


def test_resumed_training_from_activations_equals_uninterrupted_without_replaying(tmp_path):
    reader = activations(tmp_path / "a.h5")
    opts = Options(batch_size=64, shuffle_buffer=256, epochs=2, checkpoint_every=5, warmup_steps=3)
    batches = lambda cursor: reader_batches(reader, ["h"], opts, 0, cursor)  # noqa: E731
    whole = run(batches, {"h": D}, tmp_path / "whole", opts)
    assert whole["h"]["training"]["steps"] == 2 * (1500 // 64)
    seen = []
    with pytest.raises(Killed):  # dies during step 29 (epoch 1): the last checkpoint is step 25
        run(killed_after(batches, 28, seen), {"h": D}, tmp_path / "resumed", opts)
    seen_resumed = []
    resumed = run(killed_after(batches, 10**9, seen_resumed), {"h": D}, tmp_path / "resumed", opts)
    assert seen == [None] and seen_resumed == [{"epoch": 1, "rows": (25 - 23) * 64}]  # 23 steps per epoch
    assert resumed["h"]["training"]["resumed"] and resumed["h"]["training"]["steps"] == whole["h"]["training"]["steps"]
    a, b = weights(tmp_path / "whole", "h"), weights(tmp_path / "resumed", "h")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reader_stream_resumes_at_any_row(tmp_path):
    reader = activations(tmp_path / "a.h5", n=700)
    full = torch.cat(list(reader.iter_batches("h", 10, shuffle_buffer=128, seed=3)))
    for start in (0, 10, 130, 250, 690):
        rest = torch.cat(list(reader.iter_batches("h", 10, shuffle_buffer=128, seed=3, start_row=start)))
        assert torch.equal(rest, full[start:])


def test_resumed_training_from_the_model_stream_recomputes_only_the_carried_partial_batch(tmp_path):
    """With source=model, a resume runs the model from the oldest samples with untrained rows (the
    carried-over partial batch), not from the start, and ends with the same SAE."""
    adapter, dataset = FakeAdapter(grid=4), RandomImages(RandomImages.Options(n=40))
    opts = Options(source="model", batch_size=30, model_batch_size=4, checkpoint_every=4, warmup_steps=2)
    batches = lambda cursor: model_batches(adapter, dataset, ["h"], opts, cursor=cursor)  # noqa: E731
    run(batches, {"h": D_MODEL}, tmp_path / "whole", opts)
    calls_whole = adapter.forward_calls
    seen = []
    with pytest.raises(Killed):
        run(killed_after(batches, 10, seen), {"h": D_MODEL}, tmp_path / "resumed", opts)
    adapter.forward_calls = 0
    seen_resumed = []
    run(killed_after(batches, 10**9, seen_resumed), {"h": D_MODEL}, tmp_path / "resumed", opts)
    cursor = seen_resumed[0]
    # 18 tokens per sample (BOS, 16 patches, text), 4 samples per model batch: 72 rows per forward;
    # after 8 steps of 30 rows, 240 rows were trained on: forwards 0..2 (216 rows) and 24 of the 4th
    assert cursor == {"chunk": 12, "skip": 24}
    assert adapter.forward_calls == calls_whole - 3  # the three fully trained model batches are not rerun
    a, b = weights(tmp_path / "whole", "h"), weights(tmp_path / "resumed", "h")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sparsity_warning_names_the_threshold():
    from lmmsae.stages.train import sparsity_warning

    dense = {"evaluation": {"l0": {"value": 1003.0}}}
    assert sparsity_warning(dense, {"n_latents": 2048}) == (
        "L0 = 1003.0 of 2048 latents per token (49% > 10%): not a sparse code; raise the sparsity penalty "
        "(-o sae.l1_coefficient / sae.l0_coefficient)")
    assert sparsity_warning({"evaluation": {"l0": {"value": 150.0}}}, {"n_latents": 2048}) is None
    assert sparsity_warning({"evaluation": {"l0": {"value": 32.0}}}, {"n_latents": 2048, "k": 32}) is None
    low = {"training": {"last_batch": {"l0": 9.5}}}  # no stored activations: the last training batch's L0
    assert sparsity_warning(low, {"n_latents": 2048, "k": 32}).startswith("L0 = 9.5 per token for k = 32 (outside k/2..2k)")


def test_fewer_tokens_than_one_step_says_so(tmp_path):
    from click.testing import CliRunner

    from lmmsae import artifacts
    from lmmsae.cli import cli
    from lmmsae.rundir import RunDir

    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--name", "r", "--until", "train",
                                      "-o", "dataset.n=4", "-o", "train.batch_size=4096"])
    assert result.exit_code == 1
    assert ("no training step: the activations (or dataset) hold fewer tokens than one step of "
            "train.batch_size=4096: use more images, or lower -o train.batch_size") in result.output
    assert not RunDir(tmp_path / "r").is_complete(artifacts.SAE_DIR)
