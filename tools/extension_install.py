# SPDX-License-Identifier: GPL-3.0-or-later
"""Install the built extension zip into a local extension repository of the running Blender
(PyPI ``bpy``), the way *Install from Disk* does. Used by the Blender tests and the demo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_extension(user_dir: Path, repo_name: str) -> Path:
    """Build the zip, unpack it into ``user_dir/repo`` and register that folder as the
    extension repository ``repo_name``; returns the zip. Enable it afterwards with
    ``addon_utils.enable(f"bl_ext.{repo_name}.emote_lipsync")``."""
    import bpy

    build = subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"),
                            str(user_dir / "dist")], capture_output=True, text=True, check=True)
    archive = Path(build.stdout.strip().splitlines()[-1])
    repo_dir = user_dir / "repo"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(repo_dir / "emote_lipsync")
    repos = bpy.context.preferences.extensions.repos
    if repo_name not in [r.module for r in repos]:
        repo = repos.new(name=repo_name, module=repo_name, custom_directory=str(repo_dir),
                         source="USER")
        repo.enabled = True
    return archive
