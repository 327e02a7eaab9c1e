#!/usr/bin/env bash
# The demo: sets up .venv, then runs the whole inference pipeline from the command line.
# Until the trained built-in demo model exists, it uses a small random-weight model: every step
# runs for real (audio decoding, wav2vec2, the regressor, FLINT, FLAME), the motion is noise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
.venv/bin/python tools/tiny_demo.py "$@"
