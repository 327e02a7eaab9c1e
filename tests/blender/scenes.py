# SPDX-License-Identifier: GPL-3.0-or-later
"""Building test scenes in real Blender: FLAME heads and sound strips.

PyPI's bpy 4.2 has no audio support (``new_sound`` fails), so where the running Blender cannot
make a sound strip, a newer bpy venv writes the .blend and this Blender opens it (4.2 reads
4.5 files with correct strips)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[2]

STRIP_SCRIPT = """
import bpy, sys
path, wav, fps, start, trim, out = sys.argv[-6:]
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = int(fps), 1.0
editor = scene.sequence_editor_create()
strips = editor.strips if hasattr(editor, "strips") else editor.sequences
strip = strips.new_sound("dialogue", wav, 1, int(start))
handle = "left_handle_offset" if hasattr(strip, "left_handle_offset") else "frame_offset_start"
setattr(strip, handle, int(trim))
strip.select = True
editor.active_strip = strip
if path == "pack":
    strip.sound.pack()
bpy.ops.wm.save_as_mainfile(filepath=out)
"""


def has_audio() -> bool:
    try:
        import aud  # noqa: F401
    except ImportError:
        return False
    return True


def trim_start(strip, frames) -> None:
    """Cut ``frames`` from the beginning of a strip (its left handle moves right, the content
    stays). 5.3 names this ``left_handle_offset`` and warns that ``frame_offset_start``, the
    only name before it, goes in 6.0."""
    if hasattr(strip, "left_handle_offset"):
        strip.left_handle_offset = frames
    else:
        strip.frame_offset_start = frames


def add_strip(scene, wav: Path, fps: int = 25, start: int = 37, trim: int = 8,
              pack: bool = False, tmp: Path | None = None):
    """A sound strip of ``wav`` starting at ``start`` with ``trim`` frames cut from its
    beginning, selected and active. Returns the strip (possibly in a newly opened file)."""
    if has_audio():
        scene.render.fps, scene.render.fps_base = fps, 1.0
        editor = scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        strip = strips.new_sound("dialogue", str(wav), 1, start)
        trim_start(strip, trim)
        strip.select = True
        editor.active_strip = strip
        if pack:
            strip.sound.pack()
        return strip
    # This Blender has no audio: let a newer one write the scene, then open it here.
    out = (tmp or wav.parent) / f"strip_{wav.stem}_{fps}_{start}_{trim}_{int(pack)}.blend"
    for venv in (".venv-bpy45", ".venv-bpy50"):
        python = ROOT / venv / "bin" / "python"
        if python.is_file():
            break
    else:
        raise RuntimeError("Sound strips on this Blender need a 4.5 or 5.0 bpy venv too.")
    code = STRIP_SCRIPT
    subprocess.run([str(python), "-c", code, "pack" if pack else "file", str(wav), str(fps),
                    str(start), str(trim), str(out)], check=True, capture_output=True)
    bpy.ops.wm.open_mainfile(filepath=str(out))
    scene = bpy.context.scene
    editor = scene.sequence_editor
    strips = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    return strips["dialogue"]


STRIPS_SCRIPT = """
import bpy, json, sys
specs, out = json.loads(sys.argv[-2]), sys.argv[-1]
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = 25, 1.0
editor = scene.sequence_editor_create()
strips = editor.strips if hasattr(editor, "strips") else editor.sequences
for name, wav, channel, start in specs:
    strips.new_sound(name, wav, channel, start).select = True
bpy.ops.wm.save_as_mainfile(filepath=out)
"""


def add_strips(scene, specs: list[tuple[str, Path, int, int]], tmp: Path) -> dict:
    """Sound strips (name, wav, channel, start frame), all selected, at 25 fps; returns them
    by name (possibly in a newly opened file, as :func:`add_strip`)."""
    if has_audio():
        scene.render.fps, scene.render.fps_base = 25, 1.0
        editor = scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        for name, wav, channel, start in specs:
            strips.new_sound(name, str(wav), channel, start).select = True
    else:
        import json

        out = tmp / "dialogue.blend"
        python = next(ROOT / v / "bin" / "python" for v in (".venv-bpy45", ".venv-bpy50")
                      if (ROOT / v / "bin" / "python").is_file())
        subprocess.run([str(python), "-c", STRIPS_SCRIPT,
                        json.dumps([(n, str(w), c, f) for n, w, c, f in specs]), str(out)],
                       check=True, capture_output=True)
        bpy.ops.wm.open_mainfile(filepath=str(out))
        scene = bpy.context.scene
    editor = scene.sequence_editor
    strips = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    return {name: strips[name] for name, *_ in specs}


def python_of_worker() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def current_python() -> str:
    return sys.executable


def link_head_from_library(scene, mesh, library: Path):
    """Move the head and its armature into a collection, write it to ``library``, delete the
    local copies and link the collection back in, as a shot file links a character."""
    collection = bpy.data.collections.new("FLAME head")
    scene.collection.children.link(collection)
    rig = mesh.parent
    for obj in (mesh, rig):
        for users in list(obj.users_collection):
            users.objects.unlink(obj)
        collection.objects.link(obj)
    name = collection.name
    bpy.data.libraries.write(str(library), {collection}, fake_user=True)
    scene.collection.children.unlink(collection)
    bpy.data.collections.remove(collection)
    bpy.data.batch_remove([mesh, rig])
    with bpy.data.libraries.load(str(library), link=True) as (_, linked):
        linked.collections = [name]
    scene.collection.children.link(linked.collections[0])
    return linked.collections[0]


def overridden_head(scene, mesh, library: Path):
    """The head as a shot sees it after Object ▸ Library Override ▸ Make: linked from
    ``library`` and overridden (system overrides, as Blender makes them by default)."""
    linked = link_head_from_library(scene, mesh, library)
    override = linked.override_hierarchy_create(scene, bpy.context.view_layer)
    return next(o for o in override.objects if o.type == "MESH")


def evaluated_vertices(obj, frame):
    """(V, 3) vertices of ``obj`` at ``frame`` after shape keys and modifiers, object space."""
    bpy.context.scene.frame_set(int(frame))
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.zeros(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3)
