#!/usr/bin/env bash
# LLaVA-NeXT-8B's architecture (random weights) through collect -> train -> cache on ~200 images;
# prints tokens/s, images/s and peak memory per stage. Target: under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                                   # full size, --device auto (cuda)
#   SCALE=0.015625 IMAGES=4 DTYPE=bfloat16 bash benchmarks/gpu_check.sh   # tiny, on CPU (the tests)
#
# Environment: SCALE (1), IMAGES (200), DEVICE (auto), DTYPE (auto: bfloat16 on cuda), BATCH (16), OUT (a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py --scale "${SCALE:-1}" --images "${IMAGES:-200}" --device "${DEVICE:-auto}" \
    --dtype "${DTYPE:-auto}" --batch-size "${BATCH:-16}" --out "${OUT:-}" "$@"
