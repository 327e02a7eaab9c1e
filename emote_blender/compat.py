# SPDX-License-Identifier: GPL-3.0-or-later
"""Every difference between Blender 4.2, 4.5, 5.0 and 5.3 that the add-on meets, in one place.

- Sequencer: 4.2 has ``sequences``/``sequences_all``; 4.4–4.5 both; 5.0 only ``strips``.
- Strip timing: 5.3 names it ``content_start``/``left_handle``/``right_handle`` and warns that
  ``frame_start``/``frame_final_start``/``frame_final_end`` go in 6.0.
- Actions: 4.4 introduced slotted actions (layers → strips → channel bags → F-curves); 5.0
  removed ``action.fcurves``. A slot is only used when ``AnimData.action_slot`` points at it.
"""

from __future__ import annotations

from typing import Any

import bpy

SLOTTED_ACTIONS = bpy.app.version >= (4, 4, 0)  # RNA properties are not class attributes


# -- sequencer ---------------------------------------------------------------------------------

def sequencer_scene(context: Any) -> Any:
    """The scene whose sequencer the user works in (5.0 may differ from context.scene)."""
    return getattr(context, "sequencer_scene", None) or context.scene


def all_strips(scene: Any) -> list[Any]:
    editor = scene.sequence_editor
    if editor is None:
        return []
    strips = getattr(editor, "strips_all", None)
    if strips is None:
        strips = editor.sequences_all
    return list(strips)


def top_strips(editor: Any) -> Any:
    """The collection that ``new_sound`` lives on."""
    strips = getattr(editor, "strips", None)
    return strips if strips is not None else editor.sequences


def new_sound_strip(scene: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return top_strips(editor).new_sound(name, filepath, channel, frame_start)


def is_sound_strip(strip: Any) -> bool:
    return getattr(strip, "type", None) == "SOUND"


# Measured on 5.3.0 with a 100-frame sound strip placed at frame 10, its handles trimmed by 7
# and 5 frames: content_start 10.0 = frame_start, left_handle 17 = frame_final_start,
# right_handle 105 = frame_final_end, left_handle_offset 7.0 = frame_offset_start; moved to 30
# they read 30.0, 37, 125 like the old names. content_trim_start/end are something else (the
# source itself trimmed, frames held) and stay 0 under handle trims. sound_offset is unchanged.

def strip_content_start(strip: Any) -> float:
    """The scene frame where the strip's source starts (file time 0, before sound_offset)."""
    if hasattr(strip, "content_start"):
        return strip.content_start
    return strip.frame_start


def strip_first_frame(strip: Any) -> int:
    """The first scene frame the strip plays (its left handle)."""
    if hasattr(strip, "left_handle"):
        return strip.left_handle
    return strip.frame_final_start


def strip_end_frame(strip: Any) -> int:
    """One past the last scene frame the strip plays (its right handle)."""
    if hasattr(strip, "right_handle"):
        return strip.right_handle
    return strip.frame_final_end


# -- actions -----------------------------------------------------------------------------------

def new_action(name: str, owner: Any) -> Any:
    """A new Action for ``owner`` (an ID), with a slot for it where slots exist."""
    action = bpy.data.actions.new(name)
    if SLOTTED_ACTIONS:
        slot = action.slots.new(id_type=owner.id_type, name=owner.name)
        layer = action.layers.new("Layer")
        strip = layer.strips.new(type="KEYFRAME")
        strip.channelbag(slot, ensure=True)
    else:
        action.id_root = owner.id_type
    return action


def action_slot(action: Any, owner: Any) -> Any:
    """The slot of ``action`` for ``owner``'s ID type (None before slotted actions)."""
    if not SLOTTED_ACTIONS:
        return None
    for slot in action.slots:
        if slot.target_id_type in (owner.id_type, "UNSPECIFIED"):
            return slot
    return action.slots.new(id_type=owner.id_type, name=owner.name)


def fcurves(action: Any, owner: Any) -> Any:
    """The F-curve collection of ``action`` that animates ``owner``."""
    if not SLOTTED_ACTIONS:
        return action.fcurves
    slot = action_slot(action, owner)
    if not action.layers:
        action.layers.new("Layer")
    layer = action.layers[0]
    if not layer.strips:
        layer.strips.new(type="KEYFRAME")
    return layer.strips[0].channelbag(slot, ensure=True).fcurves


def assign_action(owner: Any, action: Any | None) -> None:
    """Make ``action`` the active action of ``owner`` (and point at its slot), or clear it."""
    anim = owner.animation_data or owner.animation_data_create()
    anim.action = action
    if action is not None and SLOTTED_ACTIONS:
        anim.action_slot = action_slot(action, owner)


def active_action(owner: Any) -> Any | None:
    anim = owner.animation_data
    return anim.action if anim is not None else None


def new_nla_strip(owner: Any, track_name: str, action: Any, start: int) -> Any:
    """Push ``action`` to a new NLA track of ``owner`` starting at frame ``start``."""
    anim = owner.animation_data or owner.animation_data_create()
    track = anim.nla_tracks.new()
    track.name = track_name
    strip = track.strips.new(action.name, int(start), action)
    if SLOTTED_ACTIONS and hasattr(strip, "action_slot"):
        strip.action_slot = action_slot(action, owner)
    return strip
