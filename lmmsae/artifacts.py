"""File and folder names of every artifact, in one place (see docs/artifacts.md)."""

RUN_CONFIG = "run.yaml"
ENV = "env.json"
EVENTS = "events.jsonl"
STATE_SUFFIX = ".state.json"      # beside every stage output: its fingerprint and status (lmmsae.plan)

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
ATTRIBUTION_DIR = "attribution"      # attribution/<name>.json (lmmsae attribute)
HALLUCINATION_DIR = "hallucination"  # hallucination/<name>.json (lmmsae hallucination)
CATEGORIES_DIR = "categories"        # categories/<explainer>.jsonl: concept category per explained latent
REPORT_HTML = "report/index.html"
COMPARE_DIR = "compare"              # compare/explanations/<id>.jsonl, compare/scores/<scorer>/<id>.jsonl
COMPARE_SUMMARY = "compare/summary.json"
ACTIVATION_SHARDS_DIR = "collect/shards"  # collect/shards/activations-<rank>-of-<n>.h5 under torchrun (merged)
FEATURE_SHARDS_DIR = "cache/shards"  # cache/shards/features-<rank>-of-<n>.h5 (merged into FEATURES)
SAE_METRICS = "metrics.json"         # sae/<hookpoint>/metrics.json
SAE_CURVE = "curve.jsonl"            # sae/<hookpoint>/curve.jsonl: training curve, a point every 10 steps
SAE_CHECKPOINTS = "checkpoints"      # sae/<hookpoint>/checkpoints/step-<n>/
COMPARE_HTML = "compare/index.html"
