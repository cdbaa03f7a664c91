"""Shared test setup: no external plugins unless a test asks, no network, quiet threads."""

import os

os.environ.setdefault("LMMSAE_LOAD_PLUGINS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
