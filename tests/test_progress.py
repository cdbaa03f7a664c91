"""Progress: plain periodic lines when stderr is not a terminal, every item passed through."""

import io

from lmmsae import progress


def test_plain_lines_when_not_a_terminal(monkeypatch):
    clock = iter(range(0, 1000, 4))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    items = list(progress.track(range(6), description="collect", unit="images", stream=stream))
    assert items == list(range(6))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[collect] 3/6 images (")
    assert lines[-1].startswith("[collect] done: 6 images in ")


def test_rich_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    assert list(progress.track(iter([1, 2, 3]), total=3, description="train", stream=stream)) == [1, 2, 3]
    assert "train" in stream.getvalue() and "3/3" in stream.getvalue()


def test_quiet_libraries_silences_transformers_and_the_hub_but_a_user_setting_wins(monkeypatch):
    import huggingface_hub.utils as hub
    from transformers.utils import logging

    for key in progress.QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    hub.enable_progress_bars()
    logging.enable_progress_bar()
    progress.quiet_libraries()
    assert hub.are_progress_bars_disabled() and not logging.is_progress_bar_enabled()
    assert logging.get_verbosity() == logging.ERROR
    import os

    assert {k: os.environ[k] for k in progress.QUIET_ENV} == progress.QUIET_ENV

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    hub.enable_progress_bars()
    progress.quiet_libraries()
    assert not hub.are_progress_bars_disabled()
