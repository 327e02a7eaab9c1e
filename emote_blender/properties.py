# SPDX-License-Identifier: GPL-3.0-or-later
"""Scene settings (``scene.emote``) and the takes stored on each FLAME mesh."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import generation
from .server.protocol import EMOTIONS

INTENSITIES = [("0", "Mild", "MEAD level 1"), ("1", "Medium", "MEAD level 2"),
               ("2", "Strong", "MEAD level 3")]

_style_items: list[tuple[str, str, str]] = []


def _styles(self: Any, context: Any) -> list[tuple[str, str, str]]:
    # Blender keeps only pointers to these strings: the list must outlive the call.
    _style_items.clear()
    for i, name in enumerate(generation.MODEL_INFO["styles"]):
        _style_items.append((str(i), name, f"Speaking style {name}"))
    return _style_items


_emotion_items = [(str(i), name, name) for i, name in enumerate(EMOTIONS)]
_second_items = [("-1", "None", "No second emotion")] + _emotion_items


def _reapply(self: Any, context: Any) -> None:
    generation.reapply_take_controls(self.id_data, self)


def _switch(self: Any, context: Any) -> None:
    generation.switch_take(self)


class EmoteTake(bpy.types.PropertyGroup):
    name: StringProperty(name="Name", description="Name of the take")
    label: StringProperty(name="Settings", description="The condition it was generated with")
    shape_action: PointerProperty(type=bpy.types.Action, name="Face Action")
    armature_action: PointerProperty(type=bpy.types.Action, name="Jaw Action")
    strip_name: StringProperty(name="Strip")
    strip_id: StringProperty(name="Strip Identity",
                             description="The sound strip it was made for (names change)")
    condition: StringProperty(name="Condition", description="The request's condition (JSON)")
    offset: FloatProperty(name="Offset", description="Shift the take in time (scene frames)",
                          default=0.0, soft_min=-50, soft_max=50, update=_reapply)
    mouth: FloatProperty(name="Mouth", description="Strength of jaw and lower-face motion",
                         default=1.0, min=0.0, soft_max=2.0, update=_reapply)
    upper: FloatProperty(name="Upper Face", description="Strength of upper-face motion",
                         default=1.0, min=0.0, soft_max=2.0, update=_reapply)
    smoothing: FloatProperty(name="Smoothing",
                             description="Temporal smoothing (Gaussian sigma, 25 fps frames)",
                             default=0.0, min=0.0, soft_max=5.0, update=_reapply)
    # The living face: layers computed from the take's stored speech activity.
    living: BoolProperty(name="Living Face",
                         description="Blinks, gaze, head motion and lip closure on this take",
                         default=True, update=_reapply)
    blinks: FloatProperty(name="Blinks", description="How far blinks close the eyelids "
                          "(0: no blinks)", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                          update=_reapply)
    blink_rate: FloatProperty(name="Blink Rate", description="Blink rate, × the natural rate "
                              "(more while speaking and at pauses)", default=1.0, min=0.0,
                              soft_max=3.0, max=10.0, update=_reapply)
    eye_motion: FloatProperty(name="Eye Darts", description="How often the gaze moves away "
                              "while speaking (0: the eyes stay on the target)", default=1.0,
                              min=0.0, soft_max=2.0, max=5.0, update=_reapply)
    look_at: PointerProperty(type=bpy.types.Object, name="Look At",
                             description="Object the eyes look at (empty: straight ahead)",
                             update=_reapply)
    head_motion: FloatProperty(name="Head Motion", description="Strength of the speech-driven "
                               "nods, idle sway and emotion posture (0: still)", default=1.0,
                               min=0.0, soft_max=2.0, max=3.0, update=_reapply)
    lip_closure: FloatProperty(name="Lip Closure", description="How far the lips shut on the "
                               "p, b and m the audio holds (0: as generated)", default=1.0,
                               min=0.0, max=1.0, subtype="FACTOR", update=_reapply)
    variation: IntProperty(name="Variation", description="Another draw of the blinks, gaze "
                           "and head motion", default=0, min=0, update=_reapply)


class EmoteChannelCharacter(bpy.types.PropertyGroup):
    """Dialogue routing: the character that speaks the strips of one sequencer channel."""

    channel: IntProperty(name="Channel", min=1, max=128, default=1)
    character: PointerProperty(type=bpy.types.Object, name="Character",
                               poll=lambda self, obj: obj.type == "MESH")


class EmoteSettings(bpy.types.PropertyGroup):
    rig: PointerProperty(type=bpy.types.Object, name="Head",
                         description="FLAME head mesh (empty: from the selection)",
                         poll=lambda self, obj: obj.type == "MESH")
    strip: StringProperty(name="Audio Strip",
                          description="Sound strip to use (empty: the active/selected one)")
    emotion: EnumProperty(name="Emotion", items=_emotion_items, default="1")
    intensity: EnumProperty(name="Intensity", items=INTENSITIES, default="2")
    style: EnumProperty(name="Speaking Style", items=_styles)
    second_emotion: EnumProperty(name="Second Emotion", items=_second_items, default="-1")
    mix: FloatProperty(name="Mix", description="Share of the second emotion", default=0.0,
                       min=0.0, max=1.0, subtype="FACTOR")
    animated: BoolProperty(
        name="Animated Emotion",
        description="Sample the (keyframed) emotion, intensity and mix at every frame")
    exp_pattern: StringProperty(
        name="Expression Keys",
        description="Override the expression shape-key names: a pattern with {n} (1-based) "
                    "or {i} (0-based), e.g. Expr_{n:02d}. Empty: detect Exp1… or Exp000…")
    bake_mode: EnumProperty(name="Bake", items=[
        ("NLA", "NLA Strips", "Push the take to NLA strips at the audio strip's position"),
        ("ACTION", "Into Current Action",
         "Write the take's keys into the current actions over its frame range")], default="NLA")
    channel_characters: CollectionProperty(type=EmoteChannelCharacter,
                                           name="Characters by Channel")
    # A job's running state, progress and status are not scene data (ID properties are saved
    # even with SKIP_SAVE): they live in generation.STATE.


CLASSES = (EmoteTake, EmoteChannelCharacter, EmoteSettings)


def strip_type() -> Any:
    """Sound strips' RNA base (``Strip`` from 4.4/5.0, ``Sequence`` before)."""
    return getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.emote = PointerProperty(type=EmoteSettings)
    strip_type().emote_character = PointerProperty(
        type=bpy.types.Object, name="Character", poll=lambda self, obj: obj.type == "MESH",
        description="The head that speaks this strip in a dialogue (empty: by channel or "
                    "name)")
    # Overridable, so takes made on a library-overridden rig are saved with the override.
    overridable = {"LIBRARY_OVERRIDABLE"}
    bpy.types.Object.emote_takes = CollectionProperty(
        type=EmoteTake, override={"LIBRARY_OVERRIDABLE", "USE_INSERTION"})
    bpy.types.Object.emote_active_take = IntProperty(name="Take", default=-1, update=_switch,
                                                     override=overridable)
    bpy.types.Object.emote_mapping = StringProperty(
        name="Character Mapping", override=overridable,
        description="How FLAME motion drives this character (JSON, made by Set Up Character)")
    bpy.types.Object.emote_original_shape_action = PointerProperty(
        type=bpy.types.Action, override=overridable)
    bpy.types.Object.emote_original_armature_action = PointerProperty(
        type=bpy.types.Action, override=overridable)


def unregister() -> None:
    for name in ("emote_mapping", "emote_original_armature_action",
                 "emote_original_shape_action",
                 "emote_active_take", "emote_takes"):
        delattr(bpy.types.Object, name)
    del strip_type().emote_character
    del bpy.types.Scene.emote
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
