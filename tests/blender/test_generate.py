# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate, re-generate, takes and bake in real Blender with the real worker subprocess."""

from __future__ import annotations

import subprocess
import sys

import bpy
import numpy as np
import pytest

from tests.blender.conftest import ROOT, WORKER_PYTHON
from tests.blender.scenes import add_strip, evaluated_vertices

FRAME_START, TRIM = 37, 8


def make_scene(addon, fixtures, tmp_path, fps=25, pack=False, wav="speech.wav"):
    """Strip first (on 4.2 it opens a file), then the head from the synthetic FLAME file."""
    strip = add_strip(bpy.context.scene, fixtures / wav, fps=fps, start=FRAME_START,
                      trim=TRIM, pack=pack, tmp=tmp_path)
    assert bpy.ops.emote.create_flame_head(filepath=str(fixtures / "flame.pkl")) == {"FINISHED"}
    mesh = bpy.context.view_layer.objects.active
    return bpy.context.scene, strip, mesh


def generate(**settings):
    scene = bpy.context.scene
    for key, value in settings.items():
        setattr(scene.emote, key, value)
    return bpy.ops.emote.generate(wait=True)


def fcurve_values(action, owner, data_path, index=0):
    compat = sys.modules["bl_ext.emote_test_repo.emote_lipsync.compat"]
    curve = compat.fcurves(action, owner).find(data_path, index=index)
    co = np.zeros(len(curve.keyframe_points) * 2, np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co[0::2], co[1::2]


def cli_take(fixtures, tmp_path, start, end, emotion="Happy"):
    """The worker's output for the same audio range, computed independently by the CLI."""
    out = tmp_path / f"cli_{emotion}.npz"
    subprocess.run([str(WORKER_PYTHON), "-m", "server", "generate", str(fixtures / "speech.wav"),
                    "--model", str(fixtures / "bundle"), "--emotion", emotion, "--intensity",
                    "2", "--style", "0", "--start", repr(start), "--end", repr(end), "-o",
                    str(out)], cwd=ROOT, check=True, capture_output=True)
    return np.load(out)


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_keys_equal_worker_output_resampled_to_scene_frames(clean, addon, fixtures, tmp_path,
                                                            fps):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=fps)
    first, end = compat.strip_first_frame(strip), compat.strip_end_frame(strip)
    assert first == FRAME_START + TRIM
    assert generate(emotion="1") == {"FINISHED"}
    take = mesh.emote_takes[0]
    take.living = False  # the model's own output (tests/blender/test_living.py: the layers)
    # The audio range the strip plays, in seconds of the file.
    start_s = TRIM / fps
    end_s = (end - FRAME_START) / fps
    reference = cli_take(fixtures, tmp_path, start_s, end_s)
    raw = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    np.testing.assert_allclose(raw, reference["expression"], atol=1e-5)

    frames, values = fcurve_values(take.shape_action, mesh.data.shape_keys,
                                   'key_blocks["Exp1"].value')
    np.testing.assert_array_equal(frames, np.arange(first, end))
    positions = (frames - first) / fps * 25  # take index at each scene frame
    expected = np.interp(positions, np.arange(len(raw)), reference["expression"][:, 0])
    np.testing.assert_allclose(values, expected, atol=1e-5)

    # The jaw: the bone's rotation at each frame is the slerp of the 25 fps results.
    armature = mesh.parent
    path = 'pose.bones["jaw"].rotation_axis_angle'
    channels = [fcurve_values(take.armature_action, armature, path, i)[1] for i in range(4)]
    jaw = reference["jaw"]
    for n in range(0, len(frames), max(1, len(frames) // 17)):
        p = min(positions[n], len(jaw) - 1)
        i0 = int(np.floor(p))
        i1 = min(i0 + 1, len(jaw) - 1)
        want = rotation(slerp(quaternion(jaw[i0]), quaternion(jaw[i1]), p - i0))
        angle, x, y, z = (float(c[n]) for c in channels)
        axis = np.array([x, y, z]) / np.linalg.norm([x, y, z])
        got = rotation(np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis]))
        assert np.abs(got - want).max() < 1e-5


def quaternion(axis_angle):
    """Float64 (w, x, y, z), written here so the test does not reuse the add-on's maths."""
    angle = float(np.linalg.norm(axis_angle))
    axis = np.asarray(axis_angle, np.float64) / max(angle, 1e-12)
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def slerp(q0, q1, t):
    if np.dot(q0, q1) < 0:
        q1 = -q1
    theta = np.arccos(np.clip(np.dot(q0, q1), -1, 1))
    if theta < 1e-9:
        return q0
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def rotation(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_evaluated_mesh_equals_flame_forward(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=30)
    assert generate(emotion="6") == {"FINISHED"}
    take = mesh.emote_takes[0]
    take.living = False  # the model's own output (tests/blender/test_living.py: the layers)
    motion = sys.modules["bl_ext.emote_test_repo.emote_lipsync.motion"]
    expression = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    jaw = np.asarray(take.shape_action["emote_jaw"]).reshape(-1, 3)
    jaw = jaw * 4.0  # exaggerate the (tiny random model's) jaw so pivot errors would show
    take.shape_action["emote_jaw"] = jaw.ravel().tolist()
    take.mouth = 1.0  # rewrite the keys from the stored result
    first = compat.strip_first_frame(strip)
    check_frames = np.array([first, first + 13, first + 40, compat.strip_end_frame(strip) - 1])
    positions = motion.sample_positions(check_frames, compat.strip_content_start(strip), 30.0,
                                        0.0, TRIM / 30)
    want_expression, want_jaw = motion.resample(expression, jaw, positions)
    assert np.abs(want_jaw).max() > 0.05
    np.savez(tmp_path / "params.npz", expression=want_expression, jaw=want_jaw)
    subprocess.run([str(WORKER_PYTHON), "-m", "tests.make_fixtures", "--forward",
                    str(fixtures / "flame.pkl"), str(tmp_path / "params.npz"),
                    str(tmp_path / "verts.npy")], cwd=ROOT, check=True)
    reference = np.load(tmp_path / "verts.npy")
    world = np.array(mesh.matrix_world)
    for n, frame in enumerate(check_frames):
        ours = evaluated_vertices(mesh, frame) @ world[:3, :3].T + world[:3, 3]
        expected = reference[n] @ world[:3, :3].T + world[:3, 3]
        assert np.abs(ours - expected).max() < 1e-5, frame


def test_smplx_named_rig(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    for block in mesh.data.shape_keys.key_blocks:
        for prefix in ("Exp", "Pose"):
            if block.name.startswith(prefix) and block.name[len(prefix):].isdigit():
                block.name = f"{prefix}{int(block.name[len(prefix):]) - 1:03d}"
    assert generate() == {"FINISHED"}
    take = mesh.emote_takes[0]
    key = mesh.data.shape_keys
    frames, exp0 = fcurve_values(take.shape_action, key, 'key_blocks["Exp000"].value')
    raw = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    assert abs(exp0[0] - raw[0, 0]) < 1e-5
    _, pose = fcurve_values(take.shape_action, key, 'key_blocks["Pose013"].value')
    assert len(pose) == len(frames)  # jaw correctives on Pose009..Pose017


def test_regenerate_keeps_takes_and_reuses_audio(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    assert generate(emotion="1") == {"FINISHED"}
    first = mesh.emote_takes[0]
    first_action = first.shape_action
    _, before = fcurve_values(first_action, mesh.data.shape_keys, 'key_blocks["Exp3"].value')
    assert generate(emotion="2", intensity="0") == {"FINISHED"}
    assert len(mesh.emote_takes) == 2
    second = mesh.emote_takes[1]
    assert second.shape_action["emote_cached"] == 1
    assert mesh.data.shape_keys.animation_data.action == second.shape_action
    _, after = fcurve_values(first_action, mesh.data.shape_keys, 'key_blocks["Exp3"].value')
    np.testing.assert_array_equal(before, after)
    _, other = fcurve_values(second.shape_action, mesh.data.shape_keys,
                             'key_blocks["Exp3"].value')
    assert np.abs(other - before).max() > 1e-6
    assert "Sad" in second.label and "mild" in second.label
    mesh.emote_active_take = 0
    assert mesh.data.shape_keys.animation_data.action == first_action
    # Deleting a take removes its two actions and nothing else.
    names = {a.name for a in bpy.data.actions}
    doomed = {second.shape_action.name, second.armature_action.name}
    assert bpy.ops.emote.take_delete(index=1) == {"FINISHED"}
    assert {a.name for a in bpy.data.actions} == names - doomed
    assert len(mesh.emote_takes) == 1


def take_state(name):
    """What undo must restore: takes, actions, the active action, NLA tracks (looked up by
    name: undo replaces every datablock)."""
    mesh = bpy.data.objects[name]
    key = mesh.data.shape_keys
    animation = key.animation_data
    return ([t.name for t in mesh.emote_takes], mesh.emote_active_take,
            sorted(a.name for a in bpy.data.actions),
            animation.action.name if animation and animation.action else None,
            len(animation.nla_tracks) if animation else 0)


def test_undo_restores_the_state_before_each_operator(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    name = mesh.name
    assert generate(emotion="1") == {"FINISHED"}
    bpy.ops.ed.undo_push(message="first take")
    states = [take_state(name)]
    # Called as the user does (the second argument asks for an undo step).
    scene.emote.emotion = "5"
    steps = [lambda: bpy.ops.emote.generate("EXEC_DEFAULT", True, wait=True),
             lambda: bpy.ops.emote.bake("EXEC_DEFAULT", True),
             lambda: bpy.ops.emote.take_delete("EXEC_DEFAULT", True, index=0)]
    for step in steps:
        assert step() == {"FINISHED"}
        states.append(take_state(name))
    assert len(set(map(str, states))) == len(states)  # each step changed something
    for expected in reversed(states[:-1]):
        bpy.ops.ed.undo()
        assert take_state(name) == expected
    bpy.ops.ed.redo()
    assert take_state(name) == states[1]


def test_bake_to_nla_at_the_strip(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    compat = sys.modules["bl_ext.emote_test_repo.emote_lipsync.compat"]
    key = mesh.data.shape_keys
    artist = compat.new_action("artist blink", key)
    blink = compat.fcurves(artist, key).new('key_blocks["Exp50"].value', index=0)
    blink.keyframe_points.insert(10, 0.0)
    blink.keyframe_points.insert(12, 1.0)
    compat.assign_action(key, artist)
    assert generate() == {"FINISHED"}
    assert key.animation_data.action != artist
    assert bpy.ops.emote.bake() == {"FINISHED"}
    tracks = list(key.animation_data.nla_tracks)
    assert len(tracks) == 1 and tracks[0].strips[0].frame_start == compat.strip_first_frame(strip)
    assert tracks[0].strips[0].action == mesh.emote_takes[0].shape_action
    assert key.animation_data.action == artist  # the artist's own action is active again
    arm_tracks = list(mesh.parent.animation_data.nla_tracks)
    assert arm_tracks[0].strips[0].frame_start == compat.strip_first_frame(strip)
    curves = list(compat.fcurves(artist, key))
    assert len(curves) == 1 and len(curves[0].keyframe_points) == 2  # never written to


def test_artist_controls_rewrite_keys(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    assert generate() == {"FINISHED"}
    take = mesh.emote_takes[0]
    take.living = False  # blinks would keep the expression keys from going flat
    key = mesh.data.shape_keys
    frames, base = fcurve_values(take.shape_action, key, 'key_blocks["Exp1"].value')
    take.offset = 5
    shifted, same = fcurve_values(take.shape_action, key, 'key_blocks["Exp1"].value')
    np.testing.assert_array_equal(shifted, frames + 5)
    np.testing.assert_allclose(same, base, atol=1e-6)
    take.offset = 0
    take.mouth, take.upper = 0.0, 0.0
    _, flat = fcurve_values(take.shape_action, key, 'key_blocks["Exp1"].value')
    assert np.abs(flat).max() < 1e-6
    path = 'pose.bones["jaw"].rotation_axis_angle'
    _, angle = fcurve_values(take.armature_action, mesh.parent, path, 0)
    assert np.abs(angle).max() < 1e-6
    take.mouth, take.upper, take.smoothing = 1.0, 1.0, 3.0
    _, smooth = fcurve_values(take.shape_action, key, 'key_blocks["Exp1"].value')
    assert np.abs(np.diff(smooth)).max() < np.abs(np.diff(base)).max()


def test_animated_emotion_sends_a_per_frame_condition(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    settings = scene.emote
    settings.emotion, settings.second_emotion = "0", "6"
    settings.mix = 0.0
    settings.keyframe_insert("mix", frame=compat.strip_first_frame(strip))
    settings.mix = 1.0
    settings.keyframe_insert("mix", frame=compat.strip_end_frame(strip) - 1)
    settings.animated = True
    strips = addon.strips
    audio = strips.audio_request(scene, strips.find_sound_strip(bpy.context))
    condition = addon.generation.animated_condition(scene, audio)
    emotions = condition["emotion"]
    assert emotions[0]["0"] == pytest.approx(1.0) and emotions[-1]["6"] > 0.9
    assert 0.3 < emotions[len(emotions) // 2]["6"] < 0.7
    assert len(condition["intensity"]) == len(emotions) and condition["style"] == 0
    assert generate() == {"FINISHED"}
    assert mesh.emote_takes[0].label.startswith("Animated")


def test_packed_sound_generates_like_the_file(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, pack=True)
    sound = strip.sound
    assert sound.packed_file is not None
    assert generate() == {"FINISHED"}
    raw = np.asarray(mesh.emote_takes[0].shape_action["emote_expression"]).reshape(-1, 100)
    reference = cli_take(fixtures, tmp_path, TRIM / 25,
                         (compat.strip_end_frame(strip) - FRAME_START) / 25)
    np.testing.assert_allclose(raw, reference["expression"], atol=1e-5)
    assert sound.packed_file is not None  # still packed: the user's file was not unpacked


def test_defaults_use_the_built_in_demo_head_and_model(clean, addon, tmp_path):
    """A fresh install: no FLAME file and no model chosen → Create FLAME Head makes the demo
    head and Generate uses the built-in demo model; the demo sentence moves the jaw."""
    compat = addon.compat
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = prefs.model_kind, prefs.flame_path
    prefs.property_unset("model_kind")
    prefs.flame_path = ""
    try:
        assert prefs.model_kind == "DEMO"
        strip = add_strip(bpy.context.scene, ROOT / "server" / "demo" / "sentence.wav",
                          start=1, trim=0, tmp=tmp_path)
        assert bpy.ops.emote.create_flame_head() == {"FINISHED"}
        mesh = bpy.context.view_layer.objects.active
        assert mesh.name.startswith("FLAME-demo")
        assert mesh.data.shape_keys.key_blocks.get("Exp100") is not None
        assert generate(emotion="2", intensity="0") == {"FINISHED"}
        take = mesh.emote_takes[0]
        assert take.label == "Sad · mild · moderate-neutral-brisk"
        path = 'pose.bones["jaw"].rotation_axis_angle'
        frames, angle = fcurve_values(take.armature_action, mesh.parent, path, 0)
        assert frames[0] == compat.strip_first_frame(strip) and np.ptp(angle) > 0.05  # radians
    finally:
        prefs.model_kind, prefs.flame_path = saved
