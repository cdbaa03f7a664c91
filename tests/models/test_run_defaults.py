"""Per-adapter run defaults (the paper's layer, device/dtype auto, a real dataset demanded) and the
one-line errors of the CLI around models: devices, dtypes, `--model.path`, the `models` command's hint."""

import pytest
from click.testing import CliRunner

from lmmsae import config as cfg
from lmmsae.cli import cli
from lmmsae.errors import UserError
from lmmsae.models.devices import resolve_device, resolve_dtype


def test_the_toy_world_keeps_its_defaults():
    c = cfg.resolve()
    assert (c.model.name, c.dataset.name, c.hookpoints, c.device, c.dtype) == \
        ("toy-llava", "shapes", ["layers.2"], "cpu", "float32")


@pytest.mark.parametrize("model,layer", [("llava", "layers.24"), ("llava-next", "layers.24"), ("llava-ov", "layers.21")])
def test_real_models_bring_their_own_defaults(model, layer):
    import torch

    c = cfg.resolve(flags={"model": model})
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert (c.hookpoints, c.device, c.dtype) == ([layer], auto, "bfloat16" if auto == "cuda" else "float32")
    assert c.to_dict()["device"] == auto, "run.yaml records what auto became"
    assert c.dataset.name == "", "no toy dataset for a real model: the user must name one"
    for layers in ({"model": {"name": model}}, None):  # chosen in a file, or by override, alike
        again = cfg.resolve(file=layers, overrides=[] if layers else [("model.name", model)])
        assert again.hookpoints == [layer]


def test_defaults_are_declared_at_registration_without_importing_the_adapter():
    import subprocess
    import sys

    from lmmsae.models.devices import nvidia_driver_present

    code = ("import sys; from lmmsae import config; c = config.resolve(flags={'model': 'llava-next'}); "
            "print(c.hookpoints, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"['layers.24'] {nvidia_driver_present()}", "torch only when there may be a GPU to ask about"


def test_what_the_user_gives_wins_over_the_models_defaults():
    c = cfg.resolve(flags={"model": "llava-next", "hookpoints": ["layers.8"], "device": "cpu", "dtype": "bfloat16",
                           "dataset": "hf"})
    assert (c.hookpoints, c.device, c.dtype, c.dataset.name) == (["layers.8"], "cpu", "bfloat16", "hf")
    back = cfg.resolve(file=c.to_dict())
    assert back == c, "run.yaml reproduces the run"


def test_devices_and_dtypes():
    import torch

    assert resolve_device("cpu") == "cpu" and resolve_device("AUTO") in ("cpu", "cuda")
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", "cuda:1") == "bfloat16"
    assert resolve_device("mps") == "mps"
    for bad, message in [("tpu", "device 'tpu' is not known: use cpu, cuda, cuda:N or auto"),
                         ("cuda:x", "device 'cuda:x' is not known")]:
        with pytest.raises(UserError, match=message):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device 'cuda' is not available here"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="dtype 'fp8' is not supported"):
        resolve_dtype("fp8", "cpu")


def one_line(args, tmp_path):
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "runs")] if args[0] == "run" else args)
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "runs").exists(), "a failed start leaves no run folder"
    return lines[0]


def test_a_real_model_without_a_dataset_is_told_how_to_give_one(tmp_path, llava_path):
    line = one_line(["run", "--model", "llava", "-o", f"model.checkpoint={llava_path}"], tmp_path)
    assert line == ("Error: model 'llava' needs a dataset of real images (the toy shapes fit only the toy model): "
                    "pass --dataset imagefolder -o dataset.root=DIR, or --dataset hf -o dataset.path=NAME")


def test_unknown_device_is_one_line(tmp_path):
    assert one_line(["run", "--device", "tpu"], tmp_path).startswith(
        "Error: device 'tpu' is not known: use cpu, cuda, cuda:N or auto")


def test_model_path_spellings_point_at_model_checkpoint(tmp_path):
    assert one_line(["run", "--model", "llava-next", "--model.path", "/x"], tmp_path) == \
        "Error: --model.path is not an option: component and stage settings are set with -o, e.g. " \
        "-o model.checkpoint=DIR"
    line = one_line(["run", "--model", "llava-next", "-o", "model.path=/x"], tmp_path)
    assert line.startswith("Error: unknown option 'path' for model 'llava-next'. Did you mean 'checkpoint'?")


def test_models_command_hints_its_own_flag(tmp_path):
    line = one_line(["models", "--hookpoints", "llava-next"], tmp_path)
    assert "checkpoint 'llava-hf/llama3-llava-next-8b-hf' is not a local folder" in line
    assert "--checkpoint DIR" in line and "-o model.checkpoint" not in line
