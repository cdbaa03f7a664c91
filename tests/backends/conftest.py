"""The backend tests share the explainer tests' fake protocol server and drawn records."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "explainers"))
