"""File and folder names of every artifact, in one place (see docs/artifacts.md)."""

RUN_CONFIG = "run.yaml"
ENV = "env.json"
EVENTS = "events.jsonl"
COMPLETE_SUFFIX = ".complete"

ACTIVATIONS = "collect/activations.h5"
SAE_DIR = "sae"                      # sae/<hookpoint>/{cfg.json, sae.safetensors}
SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae.safetensors"
FEATURES = "cache/features.h5"
EXPLANATIONS_DIR = "explanations"    # explanations/<explainer>.jsonl
SCORES_DIR = "scores"                # scores/<scorer>/<explainer>.jsonl
REPORT_DIR = "report"                # report/index.html
SUMMARY = "report/summary.json"
STEERING_DIR = "steering"            # steering/<name>.jsonl
RESPONSE_CACHE = "explanations/responses.sqlite"
