#!/usr/bin/env bash
# The demo: sets up the worker venv (.venv) and a Blender 5.0 venv (.venv-bpy50, PyPI bpy),
# then, in headless Blender, animates the built-in demo head with the built-in demo model:
# two takes of the shipped sentence, one baked, demo.blend, preview videos, stills and a plot
# in out/demo/ (or the folder given as the first argument).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(realpath -m "${1:-out/demo}")"
bash tools/setup.sh
EMOTE_BLENDER_VERSIONS=50 bash tools/setup_blender.sh
.venv-bpy50/bin/python tools/demo_blender.py "$out"
.venv/bin/python tools/demo_plot.py "$out/takes.npz" "$out/curves.png" >/dev/null
echo
echo "The demo wrote:"
echo "  $out/demo.blend              the head with both takes (Happy baked to the NLA)"
echo "  $out/preview_happy.mp4       preview video with the sentence (Happy, strong)"
echo "  $out/preview_sad.mp4         preview video with the sentence (Sad, mild)"
echo "  $out/still_closed.png, $out/still_open.png   a closed mouth and an open vowel"
echo "  $out/still_blink.png, $out/still_gaze.png    a blink's peak and the gaze turned aside"
echo "  $out/curves.png              jaw opening and expression curves of both takes"
