# SPDX-License-Identifier: GPL-3.0-or-later
"""A character linked into a shot through a library override takes keys, and keeps them."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from tests.blender.scenes import evaluated_vertices, overridden_head
from tests.blender.test_generate import generate, make_scene


def test_library_override_takes_keys_and_keeps_them(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    head = overridden_head(scene, mesh, tmp_path / "character.blend")
    armature = head.parent
    linked_mesh = head.data
    assert head.override_library is not None and linked_mesh.library is not None
    assert armature.override_library is not None and armature.data.library is not None
    scene.emote.rig = head
    start = compat.strip_first_frame(strip)
    rest = evaluated_vertices(head, start + 20)

    assert generate(emotion="1") == {"FINISHED"}
    assert "library override" in addon.generation.STATE.status
    # Only this head's mesh became an override; the library's mesh is untouched.
    assert head.data.override_library is not None
    assert head.data.override_library.reference == linked_mesh
    assert linked_mesh.shape_keys.animation_data is None
    assert generate(emotion="5") == {"FINISHED"}
    assert len(head.emote_takes) == 2
    assert len([m for m in bpy.data.meshes if m.override_library is not None]) == 1
    frame = start + 20
    animated = evaluated_vertices(head, frame)
    assert np.abs(animated - rest).max() > 1e-4
    assert bpy.ops.emote.bake() == {"FINISHED"}
    baked = evaluated_vertices(head, frame)
    np.testing.assert_allclose(baked, animated, atol=1e-6)

    shot = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(shot))
    bpy.ops.wm.open_mainfile(filepath=str(shot))
    head = next(o for o in bpy.data.objects if o.type == "MESH" and o.emote_takes)
    assert head.override_library is not None and head.library is None
    assert [t.label for t in head.emote_takes] == [
        t.split(" #")[0] for t in (head.emote_takes[0].name, head.emote_takes[1].name)]
    key = head.data.shape_keys
    tracks = list(key.animation_data.nla_tracks)
    assert len(tracks) == 1 and tracks[0].strips[0].frame_start == start
    assert len(head.parent.animation_data.nla_tracks) == 1
    np.testing.assert_allclose(evaluated_vertices(head, frame), animated, atol=1e-6)


def test_a_failed_take_on_an_override_leaves_the_mesh_linked(clean, addon, fixtures, tmp_path,
                                                             monkeypatch):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    head = overridden_head(scene, mesh, tmp_path / "character.blend")
    linked_mesh = head.data
    scene.emote.rig = head
    actions = {a.name for a in bpy.data.actions}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(addon.keys, "write_channels", broken)
    with pytest.raises(RuntimeError, match="Could not apply the take: disk full"):
        bpy.ops.emote.generate(wait=True)
    assert head.data == linked_mesh
    assert not [m for m in bpy.data.meshes if m.override_library is not None]
    assert {a.name for a in bpy.data.actions} == actions and not len(head.emote_takes)
