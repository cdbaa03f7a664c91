"""Fixtures for explainer tests: the fake protocol server."""

from __future__ import annotations

import pytest

from fake_lmm_server import FakeLMMServer


@pytest.fixture
def server():
    s = FakeLMMServer().start()
    yield s
    s.stop()
