# SPDX-License-Identifier: GPL-3.0-or-later
"""The living face on a take in real Blender: blinks through the eyelid direction, gaze on the
eye bones, head motion on the neck bone with its correctives, the take's layer controls."""

from __future__ import annotations

import json
import subprocess
import sys

import bpy
import numpy as np

from tests.blender.conftest import ROOT, WORKER_PYTHON
from tests.blender.scenes import add_strip, evaluated_vertices
from tests.blender.test_generate import TRIM, fcurve_values, generate, make_scene

ADDON = "bl_ext.emote_test_repo.emote_lipsync"


def addon_module(name):
    return sys.modules[f"{ADDON}.{name}"]


def stored_layers(take, **controls):
    """The take's layers at 25 fps as the add-on computes them from what the take stores."""
    motion = addon_module("motion")
    living = json.loads(take.shape_action["emote_living"])
    frames = int(take.shape_action["emote_frames"])
    return motion.living_layers(living, motion.LivingControls(**controls), frames)


def flame_forward(fixtures, tmp_path, **params):
    np.savez(tmp_path / "params.npz", **params)
    subprocess.run([str(WORKER_PYTHON), "-m", "tests.make_fixtures", "--forward",
                    str(fixtures / "flame.pkl"), str(tmp_path / "params.npz"),
                    str(tmp_path / "verts.npy")], cwd=ROOT, check=True)
    return np.load(tmp_path / "verts.npy")


def test_a_take_carries_blinks_gaze_and_head_motion(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=30)
    assert generate(emotion="1") == {"FINISHED"}
    take = mesh.emote_takes[0]
    armature = mesh.parent
    living = json.loads(take.shape_action["emote_living"])
    assert len(living["activity"]["energy"]) == int(take.shape_action["emote_frames"])
    for bone in ("neck", "left_eye", "right_eye", "jaw"):
        frames, values = fcurve_values(take.armature_action, armature,
                                       f'pose.bones["{bone}"].rotation_axis_angle', 0)
        assert len(frames) == compat.strip_end_frame(strip) - compat.strip_first_frame(strip), bone
    _, neck_angle = fcurve_values(take.armature_action, armature,
                                  'pose.bones["neck"].rotation_axis_angle', 0)
    assert np.abs(neck_angle).max() > np.radians(0.5)  # the head moves
    shape_keys = mesh.data.shape_keys
    _, pose1 = fcurve_values(take.shape_action, shape_keys, 'key_blocks["Pose1"].value')
    assert np.abs(pose1).max() > 0  # the neck's correctives are keyed like the jaw's

    # Head motion off: the neck is still; the living face off: its keys are gone.
    take.head_motion = 0.0
    _, neck_angle = fcurve_values(take.armature_action, armature,
                                  'pose.bones["neck"].rotation_axis_angle', 0)
    assert np.abs(neck_angle).max() < 1e-7
    take.living = False
    curves = addon_module("compat").fcurves(take.armature_action, armature)
    assert curves.find('pose.bones["neck"].rotation_axis_angle', index=0) is None
    assert curves.find('pose.bones["jaw"].rotation_axis_angle', index=0) is not None
    take.living = True
    assert curves.find('pose.bones["neck"].rotation_axis_angle', index=0) is not None


def test_the_evaluated_mesh_equals_flame_with_the_layers(clean, addon, fixtures, tmp_path):
    """Neck, eyes and eyelids through bones, pivots, correctives and the eyelid direction give
    FLAME's own vertices."""
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=30)
    assert generate(emotion="3") == {"FINISHED"}
    take = mesh.emote_takes[0]
    take.lip_closure = 0.0  # the closure layer has its own test
    take.blink_rate = 10.0
    take.head_motion = 2.0
    motion = addon_module("motion")
    layers = stored_layers(take, blink_rate=10.0, head=2.0, lip_closure=0.0)
    assert layers.eyelids.max() > 0.9
    expression = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    jaw = np.asarray(take.shape_action["emote_jaw"]).reshape(-1, 3)
    direction = np.asarray(mesh["emote_eyelid_direction"])
    correction = np.asarray(mesh["emote_eyelid_correction"]).reshape(100, 100)
    # A blink closes the lids from where the frame's own expression put them.
    expression = expression + layers.eyelids[:, None] * (direction - expression @ correction.T)
    peak = int(np.argmax(layers.eyelids))
    first = compat.strip_first_frame(strip)
    content_start = compat.strip_content_start(strip)
    at_peak = round(content_start + (TRIM / 30 + peak / 25) * 30)  # a blink's peak
    check = np.array([first, first + 13, at_peak, compat.strip_end_frame(strip) - 1])
    positions = motion.sample_positions(check, content_start, 30.0, 0.0, TRIM / 30)
    reference = flame_forward(
        fixtures, tmp_path, expression=motion.resample_values(expression, positions),
        jaw=motion.resample_rotations(jaw, positions),
        neck=motion.resample_rotations(layers.neck, positions),
        eyes=np.stack([motion.resample_rotations(layers.eyes[:, i], positions)
                       for i in range(2)], axis=1))
    assert np.abs(reference[1:] - reference[0]).max() > 1e-3
    for n, frame in enumerate(check):
        assert np.abs(evaluated_vertices(mesh, frame) - reference[n]).max() < 1e-5, frame


def demo_head_take(tmp_path, **settings):
    """The demo head speaking the shipped sentence (strip at frame 1) with the demo model."""
    strip = add_strip(bpy.context.scene, ROOT / "server" / "demo" / "sentence.wav", start=1,
                      trim=0, tmp=tmp_path)
    assert bpy.ops.emote.create_flame_head() == {"FINISHED"}
    mesh = bpy.context.view_layer.objects.active
    assert generate(**settings) == {"FINISHED"}
    return strip, mesh


def test_blinks_close_the_demo_heads_lids(clean, addon, demo_prefs, tmp_path):
    """The built-in demo head and model (a fresh install): at a blink's peak the evaluated
    lids are shut, and a blink does not move the mouth."""
    compat = addon.compat
    strip, mesh = demo_head_take(tmp_path, emotion="0", intensity="0")
    take = mesh.emote_takes[0]
    take.lip_closure = 0.0
    take.blink_rate = 10.0
    layers = stored_layers(take, blink_rate=10.0, lip_closure=0.0)
    peak = int(np.argmax(layers.eyelids))
    assert layers.eyelids[peak] > 0.95
    still = [t for t in range(len(layers.eyelids)) if layers.eyelids[t] == 0]
    assert still
    flame = addon_module("server.demo.head").build_demo_head().flame
    lids = addon_module("server.living.eyelids").find_eyelids(flame)
    fps = bpy.context.scene.render.fps

    def vertices(take_frame, blinks):
        take.blinks = blinks
        return evaluated_vertices(mesh, compat.strip_content_start(strip)
                                  + round(take_frame * fps / 25))

    def gap(v):
        return np.linalg.norm(v[lids.upper] - v[lids.lower], axis=1).mean()

    shut = vertices(peak, 1.0)
    assert gap(shut) < 0.1 * gap(vertices(still[0], 1.0))
    unblinked = vertices(peak, 0.0)
    assert gap(unblinked) > 0.5 * gap(vertices(still[0], 1.0))
    mouth = np.linalg.norm(shut[lids.mouth] - unblinked[lids.mouth], axis=1)
    assert mouth.max() < 1e-4  # metres: the blink leaves the mouth where it was


def test_the_eyes_look_at_the_chosen_object(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=25)
    assert generate(emotion="0") == {"FINISHED"}
    take = mesh.emote_takes[0]
    armature = mesh.parent
    eye = armature.data.bones["left_eye"]
    centre = (np.array(eye.head_local) + np.array(armature.data.bones["right_eye"].head_local)) / 2
    offset = np.array([0.3, 0.05, 1.0])  # to the head's left, a little up, in front
    target = bpy.data.objects.new("target", None)
    scene.collection.objects.link(target)
    target.location = tuple(np.array(armature.matrix_world) @ np.append(centre + offset, 1.0)
                            )[:3]
    bpy.context.view_layer.update()
    take.eye_motion = 0.0  # no aversion: the eyes stay on the target
    take.look_at = target
    frames, angle = fcurve_values(take.armature_action, armature,
                                  'pose.bones["left_eye"].rotation_axis_angle', 0)
    axis = np.stack([fcurve_values(take.armature_action, armature,
                                   'pose.bones["left_eye"].rotation_axis_angle', i)[1]
                     for i in (1, 2, 3)], axis=1)
    rotation = addon_module("server.flame").axis_angle_to_matrix(axis * angle[:, None])
    looking = rotation @ np.array([0.0, 0.0, 1.0])  # the head's rest gaze is FLAME's +z
    wanted = offset / np.linalg.norm(offset)
    error = np.degrees(np.arccos(np.clip(looking @ wanted, -1, 1)))
    assert np.median(error) < 2.0, error


def test_lip_closure_shuts_the_lips_on_p_b_and_m(clean, addon, demo_prefs, tmp_path):
    """The demo head and model on the shipped sentence ("Peter's mother made …"): at the
    frames the detector marks, the evaluated inner lips meet with Lip Closure on and part
    without it; the head made here carries the closing operator."""
    compat = addon.compat
    strip, mesh = demo_head_take(tmp_path, emotion="1", intensity="1")
    assert len(mesh["emote_lip_closure"]) > 0
    take = mesh.emote_takes[0]
    living = json.loads(take.shape_action["emote_living"])
    closure = np.asarray(living["closure"])
    shut = np.flatnonzero(closure >= 0.99)
    assert len(shut) >= 3  # p, m, m, b, pp … in this sentence
    flame = addon_module("server.demo.head").build_demo_head().flame
    lips = addon_module("server.living.closure").find_lips(flame)
    fps = bpy.context.scene.render.fps

    def gaps(amount):
        take.lip_closure = amount
        out = []
        for t in shut:
            v = evaluated_vertices(mesh, compat.strip_content_start(strip) + round(t * fps / 25))
            out.append(np.linalg.norm(v[lips.upper] - v[lips.lower], axis=1).mean())
        return np.array(out)

    rest = np.linalg.norm(flame.v_template[lips.upper] - flame.v_template[lips.lower],
                          axis=1).mean()
    closed, generated = gaps(1.0), gaps(0.0)
    assert np.all(closed <= rest + 2e-4)  # back at the lips' rest contact, to 0.2 mm
    assert generated.mean() > closed.mean() + 5e-4  # the model alone leaves them apart


def test_a_head_made_elsewhere_uses_the_flame_file_only_when_it_fits(clean, addon, fixtures):
    """A head without the add-on's stored geometry takes it from the FLAME file of the
    preferences; another head of another vertex count gets a note, also once the file's
    geometry is cached."""
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = prefs.flame_path
    prefs.flame_path = str(fixtures / "flame.pkl")
    try:
        assert bpy.ops.emote.create_flame_head(filepath=str(fixtures / "flame.pkl")) == {
            "FINISHED"}
        head = bpy.context.view_layer.objects.active
        for name in ("emote_eyelid_direction", "emote_eyelid_correction", "emote_lip_closure"):
            del head[name]  # as the official FLAME add-on's heads are
        geometry, notes = addon.generation.head_geometry(addon.rig.describe_rig(head))
        assert geometry.eyelid_direction is not None and not notes
        bpy.ops.mesh.primitive_cube_add()
        cube = bpy.context.view_layer.objects.active
        cube.shape_key_add(name="Basis")
        cube.shape_key_add(name="Exp1")
        geometry, notes = addon.generation.head_geometry(addon.rig.describe_rig(cube))
        assert geometry.eyelid_direction is None
        assert any("vertices" in note and "'Cube' has 8" in note for note in notes), notes
    finally:
        prefs.flame_path = saved


def test_damaged_living_data_in_a_file_leaves_the_layers_out_not_nan_keys(clean, addon,
                                                                         fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=25)
    assert generate(emotion="1") == {"FINISHED"}
    take = mesh.emote_takes[0]
    good = json.loads(take.shape_action["emote_living"])
    compat = addon_module("compat")
    for damage in ({"emotion_weights": [[float("nan")] * len(good["emotions"])]
                    * len(good["emotion_weights"])},
                   {"closure": [float("inf")] * len(good["closure"])},
                   {"seed": 1e300}, {"seed": "x"}):
        take.shape_action["emote_living"] = json.dumps({**good, **damage})
        take.mouth = 0.9 if take.mouth == 1.0 else 1.0  # re-keys the take
        for owner, action in ((mesh.data.shape_keys, take.shape_action),
                              (mesh.parent, take.armature_action)):
            for curve in compat.fcurves(action, owner):
                co = np.zeros(len(curve.keyframe_points) * 2)
                curve.keyframe_points.foreach_get("co", co)
                assert np.isfinite(co).all(), (damage.keys(), curve.data_path)
        curves = compat.fcurves(take.armature_action, mesh.parent)
        assert curves.find('pose.bones["neck"].rotation_axis_angle', index=0) is None
    take.shape_action["emote_living"] = json.dumps(good)
    take.mouth = 1.0
    curves = compat.fcurves(take.armature_action, mesh.parent)
    assert curves.find('pose.bones["neck"].rotation_axis_angle', index=0) is not None
