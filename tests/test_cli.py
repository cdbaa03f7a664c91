"""The CLI: fast imports, one-line errors with non-zero exits and no tracebacks."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "LMMSAE_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}


def lmmsae(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lmmsae", *args], capture_output=True, text=True, env=ENV, cwd=cwd)


def test_importing_the_cli_and_plugins_loads_no_heavy_library():
    code = ("import sys, lmmsae.cli, lmmsae.plugins as p; [p.registry(k) for k in "
            "('models','saes','datasets','backends','explainers','scorers')]; "
            "heavy = [m for m in ('torch','transformers','open_clip','h5py','anthropic','openai') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert out.stdout.strip() == "[]", out.stderr


def test_help_lists_every_stage():
    result = lmmsae("--help")
    assert result.returncode == 0
    for command in ("run", "collect", "train", "cache", "explain", "score", "report", "steer", "compare", "plugins"):
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--sae", "topkk"], "Error: unknown SAE architecture 'topkk'."),
    (["run", "--explainer", "nobody"], "Error: unknown explainer 'nobody'."),
    (["run", "-o", "sea.k=3"], "Error: unknown config section 'sea'"),
    (["run", "--dtype", "float8"], "Error: dtype 'float8' is not supported."),
    (["run", "--config", "missing.yaml"], "Error: config file 'missing.yaml' does not exist"),
    (["run", "--resume", "--name", "ghost"], "Error: cannot resume 'runs/ghost': it has no run.yaml"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    result = lmmsae(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_command_is_a_usage_error():
    result = lmmsae("trian")
    assert result.returncode == 2 and "No such command 'trian'" in result.stderr


def test_plugins_json_shape():
    result = lmmsae("plugins", "--json")
    data = json.loads(result.stdout)
    assert set(data) == {"models", "saes", "datasets", "backends", "explainers", "scorers", "plugins"}
    assert data["plugins"][0]["name"] == "lmmsae"


def run_in_process(args, env, cwd):
    """The CLI in a fresh interpreter that reports, after it exits, which heavy libraries it imported."""
    code = ("import sys; from lmmsae.cli import cli\n"
            "try:\n    cli(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('heavy:', [m for m in ('torch', 'transformers', 'open_clip', 'anthropic') if m in sys.modules], file=sys.stderr)\n"
            "    raise")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_compare_without_the_api_key_fails_before_any_stage(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "ANTHROPIC_API_KEY"}
    result = run_in_process(["compare", "--explainers", "toy-llava", "--explainers", "anthropic"], env, tmp_path)
    assert result.returncode == 1
    error, heavy = result.stderr.strip().splitlines()
    assert error == "Error: explainer 'anthropic': needs an API key: set the environment variable ANTHROPIC_API_KEY"
    assert heavy == "heavy: []"  # nothing loaded: it failed in the first second
    assert not (tmp_path / "runs").exists()


def test_run_with_an_uncached_explainer_offline_fails_before_collect(tmp_path):
    result = run_in_process(["run", "--explainer", "llava-ov"], {**ENV, "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert result.returncode == 1
    error, heavy = result.stderr.strip().splitlines()
    assert error.startswith("Error: explainer 'llava-ov': checkpoint 'llava-hf/llava-onevision-qwen2-72b-ov-hf' is "
                            "not a local folder and not in the Hugging Face cache, and downloads are off")
    assert heavy == "heavy: []"
    assert not (tmp_path / "runs").exists()


def test_interrupt_names_the_run_to_resume(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "lmmsae", "run", "-o", "dataset.n=64"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("runs/*/collect")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    (run,) = [p.name for p in (tmp_path / "runs").iterdir()]  # a timestamp: the user did not choose it
    for _ in range(40):  # a SIGINT that lands inside a __del__ or GC callback is printed and dropped by Python
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=3)
            break
        except subprocess.TimeoutExpired:
            continue
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == f"interrupted: continue with the same command plus --resume --name {run}"
