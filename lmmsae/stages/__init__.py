"""Pipeline stages. Each module `lmmsae.stages.<stage>` defines `Options` (a dataclass of the
stage's settings), `units(ctx)` (what it writes under a config: lmmsae.plan), `run(ctx: RunContext)`
(makes the units that are not current; docs/architecture.md has the contract), optionally
`CLI_PARAMS` (extra click options whose values become `<stage>.<param>` overrides), and a plain
Python function doing the work from explicit inputs. Modules import torch only inside functions.
"""

PIPELINE = ("collect", "train", "cache", "explain", "score", "report")

HELP = {
    "collect": "Stream a dataset through the model and store hookpoint activations.",
    "train": "Train SAEs on collected (or streamed) activations.",
    "cache": "Record where every SAE feature fires: top images with per-patch maps.",
    "explain": "Have an explainer describe each feature from its masked top images.",
    "score": "Score explanations (CLIP score, IoU, detection) against random baselines.",
    "report": "Summarise a run: summary.json and an HTML report.",
    "steer": "Generate with SAE features clamped or added.",
    "compare": "Run several explainers on the same features and score them side by side.",
}
