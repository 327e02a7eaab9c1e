# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Blender (PyPI ``bpy``) with the extension installed from its built zip.

Run with a bpy venv: ``.venv-bpy42/bin/python -m pytest tests/blender``. The ``addon`` fixture
builds this machine's zip once per run (wheels from ``dist/wheels-cache``) and installs it as
*Install from Disk* does (``extensions.package_install_files`` into a user repository, wheels
included). The worker runs in the project's torch venv (``.venv``), which also makes the
fixtures (tiny model, synthetic FLAME). A DeprecationWarning raised from the add-on's own code
fails the test.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_PYTHON = ROOT / ".venv" / "bin" / "python"
REPO = "emote_test_repo"
MODULE = f"bl_ext.{REPO}.emote_lipsync"
# Warnings are attributed to the module whose code triggered them (for a deprecated Blender
# property: the add-on function that read it).
ADDON_CODE = r"bl_ext\..*emote_lipsync"

# Blender reads its user folders when bpy is imported: point them at a throwaway place first
# (removed when pytest finishes: Blender's exit handler ends the process before any exit
# handler registered ahead of it runs).
if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy is not installed here (tools/setup_blender.sh makes .venv-bpy*)",
                allow_module_level=True)
_USER = Path(tempfile.mkdtemp(prefix="emote-blender-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(_USER)

import bpy  # noqa: E402, I001  (bpy first: it makes addon_utils importable)
import addon_utils  # noqa: E402, I001

sys.path.insert(0, str(ROOT / "tools"))
from extension_install import install_extension  # noqa: E402

warnings.filterwarnings("error", category=DeprecationWarning, module=ADDON_CODE)
_enabled = False


def pytest_configure(config: pytest.Config) -> None:
    # pytest resets the warning filters around every test; its ini filters apply inside.
    config.addinivalue_line("filterwarnings", f"error::DeprecationWarning:{ADDON_CODE}")


def _disable() -> None:
    """Blender 4.2 crashes (4.5 hangs) at exit with operator classes still registered."""
    global _enabled
    if _enabled:
        addon_utils.disable(MODULE, default_set=True)
        _enabled = False


atexit.register(_disable)


def pytest_unconfigure(config: pytest.Config) -> None:
    _disable()
    shutil.rmtree(_USER, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures")
    subprocess.run([str(WORKER_PYTHON), "-m", "tests.make_fixtures", str(out)], cwd=ROOT,
                   check=True)
    return out


@pytest.fixture(scope="session")
def addon(fixtures):
    global _enabled
    archive = install_extension(_USER, REPO)
    _enabled = True
    module = sys.modules[MODULE]
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python = str(WORKER_PYTHON)
    prefs.model_kind = "BUNDLE"
    prefs.model_path = str(fixtures / "bundle")
    prefs.flame_path = str(fixtures / "flame.pkl")
    prefs.device = "cpu"
    prefs.idle_minutes = 0
    module.archive = archive
    yield module
    module.operators.stop_worker()
    _disable()


@pytest.fixture
def clean(addon):
    """An empty scene at 25 fps for each test; the worker stays warm between tests. Linked
    libraries and the collections that linked or overrode them go too."""
    shot_collections = [c for c in bpy.data.collections
                        if c.library is not None or c.override_library is not None]
    if shot_collections:
        bpy.data.batch_remove(shot_collections)
    for library in list(bpy.data.libraries):
        bpy.data.libraries.remove(library)
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.armatures, bpy.data.actions,
                       bpy.data.shape_keys, bpy.data.sounds):
        ids = [i for i in collection if i.users == 0 or collection is bpy.data.objects]
        if ids:
            bpy.data.batch_remove(ids)
    for collection in (bpy.data.meshes, bpy.data.armatures, bpy.data.actions, bpy.data.sounds):
        if len(collection):
            bpy.data.batch_remove(list(collection))
    scene = bpy.context.scene
    if scene.sequence_editor is not None:
        scene.sequence_editor_clear()
    if scene.animation_data is not None:
        scene.animation_data_clear()
    scene.render.fps, scene.render.fps_base = 25, 1.0
    scene.frame_start, scene.frame_end = 1, 250
    settings = scene.emote
    settings.rig = None
    settings.strip = ""
    settings.emotion, settings.intensity, settings.second_emotion = "1", "2", "-1"
    settings.mix, settings.animated, settings.exp_pattern = 0.0, False, ""
    settings.channel_characters.clear()
    settings.bake_mode = "NLA"
    return scene


@pytest.fixture
def demo_prefs(addon):
    """A fresh install's preferences: the built-in demo model, no FLAME file (so Create FLAME
    Head makes the demo head); restored afterwards."""
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = prefs.model_kind, prefs.flame_path
    prefs.property_unset("model_kind")
    prefs.flame_path = ""
    yield prefs
    prefs.model_kind, prefs.flame_path = saved
