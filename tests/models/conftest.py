import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def llava_path(tiny_dir):
    import tiny
    return tiny.build_llava(tiny_dir / "llava")


@pytest.fixture(scope="session")
def llava_adapter(llava_path):
    from lmmsae.models.llava import LlavaAdapter
    return LlavaAdapter(LlavaAdapter.Options(checkpoint=str(llava_path)))
