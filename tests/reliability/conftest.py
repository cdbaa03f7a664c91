"""The reliability tests use the explainer tests' fake API server and the oracle features.h5 writer."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "explainers"))
sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))
