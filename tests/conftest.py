"""Shared test setup: no external plugins unless a test asks, no network, quiet threads; one small real
toy-world run per session (`small_run`)."""

import os

os.environ.setdefault("LMMSAE_LOAD_PLUGINS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def external_plugins(monkeypatch):
    """Load installed third-party plugins for this test only."""
    from lmmsae import plugins

    monkeypatch.delenv("LMMSAE_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def toy_weights():
    """The shipped toy-world weights are core data: a test needing them fails without them, never skips."""
    from lmmsae import toyworld

    assert toyworld.weights_available(), (f"the toy-world weights are missing from {toyworld.WEIGHTS_DIR}: "
                                          f"reinstall lmmsae, or rebuild them with python -m lmmsae.toyworld.train")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """runs/small: the real stages on the toy world, with a steering sweep, a comparison and HTML
    explanations (tests/small_run.py). Shared by the report tests and the documented commands' tests;
    a test that changes a run works on a copy."""
    from small_run import make_small_run

    from lmmsae import toyworld

    if not toyworld.weights_available():
        pytest.fail("the toy world's weights are missing from lmmsae/toyworld/weights")
    return make_small_run(tmp_path_factory.mktemp("runs"))
