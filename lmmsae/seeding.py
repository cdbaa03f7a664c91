"""One --seed sets every random generator the stages use.

(Not PYTHONHASHSEED: it is read once, when the interpreter starts; nothing here depends on str hashes.)"""

from __future__ import annotations

import random
import sys


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    if "torch" in sys.modules or _torch_installed():
        import torch

        torch.manual_seed(seed)


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
