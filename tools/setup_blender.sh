#!/usr/bin/env bash
# Creates one venv per tested Blender version with PyPI's bpy (a real headless Blender):
# .venv-bpy42 (4.2 LTS), .venv-bpy45 (4.5 LTS), .venv-bpy50 (5.0) on Python 3.11 and
# .venv-bpy53 (5.3) on Python 3.13, as Blender 5.1 and later use. About 1 GB each.
# EMOTE_BLENDER_VERSIONS="42 53" limits the set. Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
declare -A spec=([42]="bpy==4.2.23" [45]="bpy==4.5.15" [50]="bpy==5.0.1" [53]="bpy==5.3.0")
# bpy 4.5/5.0 pin numpy<2; 4.2 accepts numpy 2 and then misbehaves, so pin it there too.
# bpy 5.3 needs numpy 2 (>=2.2,<3).
declare -A numpy=([42]="numpy<2" [45]="numpy<2" [50]="numpy<2" [53]="numpy>=2.2,<3")
for version in ${EMOTE_BLENDER_VERSIONS:-42 45 50 53}; do
    venv=".venv-bpy$version"
    want="${spec[$version]} ${numpy[$version]} pytest==9.2.0"
    if [ -f "$venv/.emote-installed" ] && [ "$(cat "$venv/.emote-installed")" = "$want" ]; then
        continue
    fi
    if [ ! -x "$venv/bin/python" ]; then
        if [ "$version" -ge 51 ]; then
            python="${PYTHON313:-python3.13}"
            PYENV_VERSION="${PYENV_VERSION:-3.13.0}" "$python" -m venv "$venv"
        else
            python="${PYTHON:-python3.11}"
            command -v "$python" >/dev/null || python=python3
            "$python" -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${want}
    echo "$want" > "$venv/.emote-installed"
done
