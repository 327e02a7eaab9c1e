# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the extension zip for this machine and install it into the running Blender (PyPI
``bpy``) the way *Install from Disk* does: ``extensions.package_install_files`` into a user
repository, wheels included, add-on enabled. Used by the Blender tests and the demo."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import build_extension  # noqa: E402

ADDON_ID = "emote_lipsync"


def this_platform() -> str:
    """Blender's name for this machine's platform (``linux-x64``, ``macos-arm64``, …)."""
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform,
                                                                            sys.platform)
    machine = platform.machine().lower()
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


def build_zip(out_dir: Path, cache: Path = build_extension.WHEEL_CACHE) -> Path:
    """The extension zip for this machine, written into ``out_dir`` (wheels from ``cache``)."""
    return build_extension.build_platform(out_dir, this_platform(), cache)


def install_zip(archive: Path, repo_name: str = "user_default") -> str:
    """Install ``archive`` into the user repository ``repo_name`` (made when missing) and
    enable it; returns the add-on's module name, ``bl_ext.<repo>.emote_lipsync``."""
    import bpy

    repos = bpy.context.preferences.extensions.repos
    if repo_name not in [r.module for r in repos]:
        repos.new(name=repo_name, module=repo_name, source="USER").enabled = True
    result = bpy.ops.extensions.package_install_files(
        filepath=str(archive), repo=repo_name, enable_on_install=True)
    module = f"bl_ext.{repo_name}.{ADDON_ID}"
    if result != {"FINISHED"} or module not in bpy.context.preferences.addons:
        raise RuntimeError(f"Blender did not install and enable {archive.name} "
                           f"({sorted(result)}); its messages are printed above.")
    return module


def install_extension(user_dir: Path, repo_name: str) -> Path:
    """Build the zip into ``user_dir/dist``, install it into the user repository
    ``repo_name`` and enable it; returns the zip."""
    archive = build_zip(user_dir / "dist")
    install_zip(archive, repo_name)
    return archive
