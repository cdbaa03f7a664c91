"""One seed makes Python, NumPy and torch draw the same numbers again."""

import random

import numpy as np
import torch

from lmmsae.seeding import seed_everything


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_draws_different_seed_different_draws():
    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    assert draw() != a
