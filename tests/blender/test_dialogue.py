# SPDX-License-Identifier: GPL-3.0-or-later
"""Dialogue scenes in real Blender: several characters, many strips, one click each way."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from tests.blender.scenes import add_strips
from tests.blender.test_generate import fcurve_values

LINES = [  # name, channel, start frame: Alice speaks channel 1, Bob's lines carry his name
    ("hello there", 1, 1), ("Bob_reply", 2, 40), ("how are you", 1, 90),
    ("Bob_fine", 2, 130), ("good to hear", 1, 170), ("Bob_bye", 2, 215),
]


def dialogue_scene(addon, fixtures, tmp_path, lines=None):
    """Alice (channel 1) and Bob (by name) and the strips of ``lines`` (name, channel, start,
    wav; default: :data:`LINES` of the 4 s fixture)."""
    lines = lines or [(n, c, f, "speech.wav") for n, c, f in LINES]
    strips = add_strips(bpy.context.scene, [(n, fixtures / w, c, f) for n, c, f, w in lines],
                        tmp_path)
    heads = {}
    for name in ("Alice", "Bob"):
        assert bpy.ops.emote.create_flame_head(filepath=str(fixtures / "flame.pkl")) == {
            "FINISHED"}
        heads[name] = bpy.context.view_layer.objects.active
        heads[name].name = name
    scene = bpy.context.scene
    assert bpy.ops.emote.channel_character() == {"FINISHED"}
    scene.emote.channel_characters[0].channel = 1
    scene.emote.channel_characters[0].character = heads["Alice"]
    return scene, strips, heads


def test_a_dialogue_generates_and_bakes_in_one_click_each(clean, addon, fixtures, tmp_path):
    compat = addon.compat
    scene, strips, heads = dialogue_scene(addon, fixtures, tmp_path)
    strips["good to hear"].emote_character = heads["Bob"]  # the strip's own choice wins
    assert bpy.ops.emote.generate_dialogue(wait=True) == {"FINISHED"}
    assert "6 of 6 lines" in addon.generation.STATE.status
    speakers = {"hello there": "Alice", "how are you": "Alice", "good to hear": "Bob",
                "Bob_reply": "Bob", "Bob_fine": "Bob", "Bob_bye": "Bob"}
    assert len(heads["Alice"].emote_takes) == 2 and len(heads["Bob"].emote_takes) == 4
    for name, speaker in speakers.items():
        strip = strips[name]
        head = heads[speaker]
        takes = [t for t in head.emote_takes if t.strip_id == strip["emote_strip_id"]]
        assert len(takes) == 1, name
        frames, _ = fcurve_values(takes[0].shape_action, head.data.shape_keys,
                                  'key_blocks["Exp1"].value')
        assert frames[0] == compat.strip_first_frame(strip)
        assert frames[-1] == compat.strip_end_frame(strip) - 1
    assert not [o for o in bpy.data.objects if "emote_job" in o.keys()]

    assert bpy.ops.emote.bake_dialogue() == {"FINISHED"}
    for speaker, count in (("Alice", 2), ("Bob", 4)):
        tracks = heads[speaker].data.shape_keys.animation_data.nla_tracks
        starts = sorted(s.frame_start for t in tracks for s in t.strips)
        assert len(starts) == count
        wanted = sorted(compat.strip_first_frame(strips[n]) for n, who in speakers.items()
                        if who == speaker)
        np.testing.assert_allclose(starts, wanted)


def test_cancel_stops_the_rest_of_a_dialogue_and_keeps_finished_takes(clean, addon, fixtures,
                                                                      tmp_path):
    # The first line is short; the others are 20 minutes each, so the worker is still on the
    # second when the first line's take is applied and Cancel is pressed.
    lines = [("hello there", 1, 1, "speech.wav")] + [
        (f"Bob_line{i}", 1 + i, 200, "long.wav") for i in range(1, 6)]
    scene, strips, heads = dialogue_scene(addon, fixtures, tmp_path, lines)
    generation = addon.generation
    jobs = generation.start_dialogue(bpy.context)
    assert len(jobs) == 6
    while True:  # until the first line's take is applied
        generation.poll_generation()
        if len(heads["Alice"].emote_takes) + len(heads["Bob"].emote_takes) >= 1:
            break
    assert generation.cancel_generation()
    level, message = generation.wait_for_generation()
    assert len(heads["Alice"].emote_takes) == 1 and len(heads["Bob"].emote_takes) == 0, message
    assert "cancelled" in message and "finished takes are kept" in message
    assert generation.pending() is None and not generation.queued()
    assert not generation.STATE.running
    assert not [o for o in bpy.data.objects if "emote_job" in o.keys()]


def test_a_strip_without_a_character_is_named_and_nothing_starts(clean, addon, fixtures,
                                                                 tmp_path):
    strips = add_strips(bpy.context.scene, [("narrator", fixtures / "speech.wav", 3, 1)],
                        tmp_path)
    assert strips["narrator"].select
    with pytest.raises(RuntimeError, match="No character for the strips narrator"):
        bpy.ops.emote.generate_dialogue(wait=True)
    assert addon.generation.pending() is None and not addon.generation.STATE.running


def test_a_duplicated_strip_gets_its_own_identity(clean, addon, fixtures, tmp_path):
    strips = add_strips(bpy.context.scene, [("line", fixtures / "speech.wav", 1, 1),
                                            ("line copy", fixtures / "speech.wav", 2, 1)],
                        tmp_path)
    scene = bpy.context.scene
    first = addon.generation.strip_identity(strips["line"], scene)
    strips["line copy"]["emote_strip_id"] = first  # as Shift+D copies custom properties
    second = addon.generation.strip_identity(strips["line copy"], scene)
    assert second != first and strips["line copy"]["emote_strip_id"] == second
    assert addon.generation.strip_identity(strips["line"], scene) == first
