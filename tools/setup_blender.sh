#!/usr/bin/env bash
# Creates one venv per tested Blender version with PyPI's bpy (a real headless Blender):
# .venv-bpy42 (4.2 LTS), .venv-bpy45 (4.5 LTS), .venv-bpy50 (5.0). About 1 GB each.
# EMOTE_BLENDER_VERSIONS="42 50" limits the set. Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
declare -A spec=([42]="bpy==4.2.23" [45]="bpy==4.5.15" [50]="bpy==5.0.1")
for version in ${EMOTE_BLENDER_VERSIONS:-42 45 50}; do
    venv=".venv-bpy$version"
    want="${spec[$version]} numpy<2 pytest==9.2.0"
    if [ -f "$venv/.emote-installed" ] && [ "$(cat "$venv/.emote-installed")" = "$want" ]; then
        continue
    fi
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # bpy 4.5/5.0 pin numpy<2; 4.2 accepts numpy 2 and then misbehaves, so pin it for all.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${want}
    echo "$want" > "$venv/.emote-installed"
done
