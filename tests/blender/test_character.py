# SPDX-License-Identifier: GPL-3.0-or-later
"""Characters that are not FLAME heads, in real Blender: Set Up Character, takes keyed on an
ARKit-52 head with a jaw bone and on a viseme-only face, the take controls, landmarks moved
in the viewport, the mapping exported, and the evaluated mesh's lips shut at p, b and m."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from mathutils import Matrix

from tests.blender.conftest import ROOT
from tests.blender.scenes import add_strip, evaluated_vertices, overridden_head
from tests.blender.test_generate import fcurve_values, generate
from tests.characters import arkit_character, viseme_character


def build_character(test):
    """The test character as a Blender mesh (its shape keys and slider ranges), under an
    armature with its jaw bone (head, rest orientation, vertex group) when it has one."""
    geometry = test.geometry
    data = bpy.data.meshes.new(geometry.name)
    data.from_pydata(geometry.vertices.tolist(), [], geometry.faces.tolist())
    data.update()
    mesh = bpy.data.objects.new(geometry.name, data)
    bpy.context.scene.collection.objects.link(mesh)
    mesh.shape_key_add(name="Basis", from_mix=False)
    for name, offsets, (lo, hi) in zip(geometry.key_names, geometry.key_offsets,
                                       geometry.key_ranges, strict=True):
        block = mesh.shape_key_add(name=name, from_mix=False)
        block.data.foreach_set("co", (geometry.vertices + offsets).astype(np.float32).ravel())
        block.slider_min, block.slider_max = float(lo), float(hi)
        block.value = 0.0
    if geometry.jaw is not None:
        arm_data = bpy.data.armatures.new("rig")
        armature = bpy.data.objects.new("rig", arm_data)
        bpy.context.scene.collection.objects.link(armature)
        bpy.context.view_layer.objects.active = armature
        bpy.ops.object.mode_set(mode="EDIT")
        # A head bone holds the rest of each vertex's weight: Blender's Armature modifier
        # divides by the sum of a vertex's weights, so a lone jaw weight of 0.3 would move it
        # fully.
        head = arm_data.edit_bones.new("head")
        head.head, head.tail = tuple(geometry.jaw.head), tuple(geometry.jaw.head + [0, 0, 0.1])
        bone = arm_data.edit_bones.new(geometry.jaw.name)
        rest = Matrix(np.asarray(geometry.jaw.rest).tolist()).to_4x4()
        rest.translation = tuple(geometry.jaw.head)
        bone.head, bone.tail = (0, 0, 0), (0, 0.03, 0)
        bone.matrix = rest
        bone.parent = head
        bpy.ops.object.mode_set(mode="OBJECT")
        mesh.parent = armature
        mesh.modifiers.new("Armature", "ARMATURE").object = armature
        jaw_group = mesh.vertex_groups.new(name=geometry.jaw.name)
        head_group = mesh.vertex_groups.new(name="head")
        for v, w in enumerate(geometry.jaw.weights):
            if w > 0:
                jaw_group.add([v], float(w), "REPLACE")
            if w < 1:
                head_group.add([v], float(1 - w), "REPLACE")
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    mesh.select_set(True)
    bpy.context.view_layer.objects.active = mesh
    return mesh


def add_sentence(tmp_path):
    """The shipped sentence as a strip at frame 1: first, since on 4.2 it opens a file."""
    return add_strip(bpy.context.scene, ROOT / "server" / "demo" / "sentence.wav", start=1,
                     trim=0, tmp=tmp_path)


def sentence_take(mesh, strip, **settings):
    bpy.context.scene.emote.rig = mesh
    assert generate(**settings) == {"FINISHED"}
    return strip, mesh.emote_takes[-1]


def test_an_arkit_head_is_set_up_and_speaks(clean, addon, demo_prefs, tmp_path):
    compat = addon.compat
    strip = add_sentence(tmp_path)
    test = arkit_character()
    mesh = build_character(test)
    with pytest.raises(RuntimeError, match="not set up"):
        bpy.ops.emote.edit_landmarks()
    assert bpy.ops.emote.setup_character() == {"FINISHED"}
    mapping = json.loads(mesh.emote_mapping)
    assert len(mapping["key_names"]) == 52 and mapping["jaw_bone"] == "jaw"
    status = addon.rig.describe_rig(mesh)
    assert status.mapping is not None and status.bone("jaw") == "jaw"

    strip, take = sentence_take(mesh, strip, emotion="1", intensity="2")
    keys = mesh.data.shape_keys
    ranges = {n: tuple(r) for n, r in zip(test.geometry.key_names, test.geometry.key_ranges,
                                          strict=True)}
    for name in ("jawOpen", "mouthSmileLeft", "browInnerUp", "eyeBlinkLeft", "mouthClose"):
        frames, values = fcurve_values(take.shape_action, keys, f'key_blocks["{name}"].value')
        assert frames[0] == compat.strip_first_frame(strip)
        assert frames[-1] == compat.strip_end_frame(strip) - 1
        lo, hi = ranges[name]
        assert values.min() >= lo - 1e-6 and values.max() <= hi + 1e-6, name
    _, smile = fcurve_values(take.shape_action, keys, 'key_blocks["mouthSmileLeft"].value')
    assert smile.max() > 0.05  # Happy smiles
    _, blink = fcurve_values(take.shape_action, keys, 'key_blocks["eyeBlinkLeft"].value')
    living = json.loads(take.shape_action["emote_living"])
    _, angle = fcurve_values(take.armature_action, mesh.parent,
                             'pose.bones["jaw"].rotation_quaternion', 0)
    assert np.degrees(2 * np.arccos(np.clip(angle.min(), -1, 1))) > 3  # the jaw bone opens
    report = json.loads(take.shape_action["emote_report"])
    assert report["mouth"] > 0.5

    # Lips shut where the detector marked p, b and m, on the evaluated mesh.
    closure = np.asarray(living["closure"])
    upper, lower = test.truth["upper_lip"], test.truth["lower_lip"]

    def gap(frame):
        v = evaluated_vertices(mesh, frame)
        return np.linalg.norm(v[upper] - v[lower], axis=1).mean()

    shut = [t for t in np.flatnonzero(closure >= 0.99)]
    gaps = np.array([gap(compat.strip_content_start(strip) + t) for t in range(0, len(closure), 3)])
    typical = np.percentile(gaps, 90)
    assert typical > 0.004  # the mouth does open
    closed = np.array([gap(compat.strip_content_start(strip) + t) for t in shut])
    assert np.mean(closed < 0.1 * typical) >= 0.9, closed / typical

    # The controls re-key the take: no mouth → the jaw stays shut; the living face off → the
    # blinks go.
    take.mouth = 0.0
    _, angle = fcurve_values(take.armature_action, mesh.parent,
                             'pose.bones["jaw"].rotation_quaternion', 0)
    assert np.degrees(2 * np.arccos(np.clip(angle.min(), -1, 1))) < 0.5
    take.mouth = 1.0
    take.living = False
    _, still = fcurve_values(take.shape_action, keys, 'key_blocks["eyeBlinkLeft"].value')
    assert still.max() < blink.max()

    # Look At: the eyeLook keys turn the eyes to an object at the subject's left.
    m = addon.character.mapping_of(mesh)
    eyes = np.mean([v for n, v in m.landmarks.items() if "eye" in n], axis=0)
    target = bpy.data.objects.new("target", None)
    bpy.context.scene.collection.objects.link(target)
    target.location = tuple(eyes + m.rotation @ np.array([0.3, 0.0, 1.0]))
    bpy.context.view_layer.update()
    take.living = True
    take.eye_motion = 0.0
    take.look_at = target
    wanted = np.degrees(np.arctan(0.3)) / 30
    for name in ("eyeLookOutLeft", "eyeLookInRight"):
        _, look = fcurve_values(take.shape_action, keys, f'key_blocks["{name}"].value')
        assert abs(np.median(look) - wanted) < 0.05, (name, np.median(look), wanted)
    _, away = fcurve_values(take.shape_action, keys, 'key_blocks["eyeLookInLeft"].value')
    assert np.median(away) < 0.01

    # The panel shows the character's state and the take's layers and report.
    from tests.blender.test_faults import RecordingLayout

    layout = RecordingLayout()
    addon.panels.draw_emote(layout, bpy.context)
    labels = [kwargs.get("text") for name, _, kwargs in layout.log if name == "label"]
    assert any(t and t.startswith("Character: mouth") for t in labels), labels
    assert any(t and t.startswith("Reproduces mouth") for t in labels), labels
    operators = [args[0] for name, args, _ in layout.log if name == "operator"]
    for name in ("emote.setup_character", "emote.edit_landmarks", "emote.export_mapping",
                 "emote.generate_dialogue", "emote.bake_dialogue", "emote.bake"):
        assert name in operators, name
    props = [args[1] for name, args, _ in layout.log if name == "prop"]
    for name in ("living", "blinks", "blink_rate", "eye_motion", "look_at", "head_motion",
                 "lip_closure", "variation", "emote_character"):
        assert name in props, name

    # Bake works as on FLAME heads.
    assert bpy.ops.emote.bake() == {"FINISHED"}
    assert len(keys.animation_data.nla_tracks) == 1


def test_a_viseme_face_says_what_it_cannot_express(clean, addon, demo_prefs, tmp_path):
    compat = addon.compat
    strip = add_sentence(tmp_path)
    test = viseme_character()
    mesh = build_character(test)
    assert bpy.ops.emote.setup_character() == {"FINISHED"}
    mapping = addon.character.mapping_of(mesh)
    assert any("brows" in note for note in mapping.notes), mapping.notes
    strip, take = sentence_take(mesh, strip, emotion="0", intensity="1")
    living = json.loads(take.shape_action["emote_living"])
    closure = np.asarray(living["closure"])
    upper, lower = test.truth["upper_lip"], test.truth["lower_lip"]

    def gap(t):
        v = evaluated_vertices(mesh, compat.strip_content_start(strip) + t)
        return np.linalg.norm(v[upper] - v[lower], axis=1).mean()

    typical = np.percentile([gap(t) for t in range(0, len(closure), 3)], 90)
    assert typical > 0.003  # its visemes open the mouth
    closed = np.array([gap(t) for t in np.flatnonzero(closure >= 0.99)])
    assert np.mean(closed < 0.1 * typical) >= 0.9, closed / typical  # closures still close


def test_moved_landmarks_are_used_and_the_mapping_exports(clean, addon, demo_prefs, tmp_path):
    test = arkit_character()
    mesh = build_character(test)
    assert bpy.ops.emote.setup_character() == {"FINISHED"}
    first = addon.character.mapping_of(mesh)
    assert bpy.ops.emote.edit_landmarks() == {"FINISHED"}
    empties = addon.character.landmark_empties(mesh)
    assert set(empties) == set(first.landmarks)
    corner = empties["mouth_left"]
    world = np.array(mesh.matrix_world) @ np.append(first.landmarks["mouth_left"], 1.0)
    np.testing.assert_allclose(np.array(corner.matrix_world.translation), world[:3], atol=1e-5)
    corner.location = tuple(np.array(first.landmarks["mouth_left"]) + [0.004, 0.0, 0.0])
    bpy.context.view_layer.update()
    assert bpy.ops.emote.setup_character() == {"FINISHED"}
    second = addon.character.mapping_of(mesh)
    moved = np.array(second.landmarks["mouth_left"]) - np.array(first.landmarks["mouth_left"])
    assert abs(moved[0] - 0.004) < 1e-4

    out = tmp_path / "mapping.json"
    assert bpy.ops.emote.export_mapping(filepath=str(out)) == {"FINISHED"}
    assert addon.server.retarget.CharacterMapping.from_json(out.read_text()).n_keys == 52
    blend = tmp_path / "not_a_mapping.txt"
    blend.write_text("keep me")
    with pytest.raises(RuntimeError, match="not a character mapping"):
        bpy.ops.emote.export_mapping(filepath=str(blend))
    assert blend.read_text() == "keep me"


def test_a_character_set_up_in_its_library_speaks_through_an_override(clean, addon, demo_prefs,
                                                                     tmp_path):
    compat = addon.compat
    strip = add_sentence(tmp_path)
    test = arkit_character()
    mesh = build_character(test)
    assert bpy.ops.emote.setup_character() == {"FINISHED"}
    mapping = mesh.emote_mapping
    head = overridden_head(bpy.context.scene, mesh, tmp_path / "character.blend")
    assert head.override_library is not None and head.emote_mapping == mapping
    strip, take = sentence_take(head, strip, emotion="6")
    _, values = fcurve_values(take.shape_action, head.data.shape_keys,
                              'key_blocks["jawOpen"].value')
    assert len(values) == compat.strip_end_frame(strip) - compat.strip_first_frame(strip)
    shot = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(shot))
    bpy.ops.wm.open_mainfile(filepath=str(shot))
    head = next(o for o in bpy.data.objects if o.type == "MESH" and o.emote_takes)
    assert head.emote_mapping == mapping and len(head.emote_takes) == 1
    head.emote_takes[0].mouth = 0.5  # the controls still re-key it after reopening
    assert addon.rig.describe_rig(head).mapping is not None
