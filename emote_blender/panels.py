# SPDX-License-Identifier: GPL-3.0-or-later
"""The EMOTE panel, in the 3D Viewport sidebar and the Sequencer sidebar."""

from __future__ import annotations

import json
from typing import Any

import bpy

from . import compat, generation, rig


class EMOTE_UL_takes(bpy.types.UIList):
    def draw_item(self, context: Any, layout: Any, data: Any, item: Any, icon: Any,
                  active_data: Any, active_property: str, index: int = 0) -> None:
        layout.prop(item, "name", text="", emboss=False, icon="ACTION")


def draw_emote(layout: Any, context: Any) -> None:
    """Shared by both panels; a plain function so it can be exercised headless."""
    settings = context.scene.emote
    mesh = settings.rig or rig.find_rig_object(context)

    box = layout.box()
    box.prop(settings, "rig")
    box.label(text=f"Head: {mesh.name}" if mesh else "Head: none selected",
              icon="OUTLINER_OB_MESH" if mesh else "ERROR")
    _draw_character(box, context, mesh)
    strip_name = settings.strip
    if not strip_name:
        scene = compat.sequencer_scene(context)
        editor = scene.sequence_editor
        active = editor.active_strip if editor is not None else None
        strip_name = active.name if active is not None and compat.is_sound_strip(active) else ""
    box.prop(settings, "strip")
    box.label(text=f"Audio: {strip_name}" if strip_name else "Audio: select a sound strip",
              icon="SOUND" if strip_name else "ERROR")

    col = layout.column(align=True)
    col.prop(settings, "emotion")
    col.prop(settings, "intensity")
    col.prop(settings, "style")
    col.prop(settings, "second_emotion")
    sub = col.row()
    sub.enabled = settings.second_emotion != "-1"
    sub.prop(settings, "mix", slider=True)
    col.prop(settings, "animated")

    state = generation.STATE  # the job's state is never saved with the file
    _draw_dialogue(layout, context)
    if state.running:
        row = layout.row(align=True)
        if hasattr(row, "progress"):  # 4.0+
            row.progress(factor=state.progress, text=state.status or "Generating…")
        else:
            row.label(text=state.status or "Generating…")
        row.operator("emote.cancel", text="", icon="X")
    else:
        layout.operator("emote.generate", icon="PLAY_SOUND")
        if state.status:
            layout.label(text=state.status, icon="ERROR" if state.level == "ERROR" else "INFO")

    if mesh is not None:
        layout.label(text="Takes")
        row = layout.row()
        row.template_list("EMOTE_UL_takes", "", mesh, "emote_takes", mesh, "emote_active_take",
                          rows=3)
        row.operator("emote.take_delete", text="", icon="REMOVE")
        index = mesh.emote_active_take
        if 0 <= index < len(mesh.emote_takes):
            take = mesh.emote_takes[index]
            col = layout.column(align=True)
            col.label(text=take.label)
            col.prop(take, "offset")
            col.prop(take, "mouth", slider=True)
            col.prop(take, "upper", slider=True)
            col.prop(take, "smoothing")
            report = take.shape_action.get("emote_report") if take.shape_action else None
            if report:
                from .character import quality_text

                col.label(text=f"Reproduces {quality_text(json.loads(report))}")
            if take.shape_action is not None and take.shape_action.get("emote_living"):
                box = layout.box()
                box.prop(take, "living")
                col = box.column(align=True)
                col.enabled = take.living
                col.prop(take, "blinks", slider=True)
                col.prop(take, "blink_rate")
                col.prop(take, "eye_motion")
                col.prop(take, "look_at")
                col.prop(take, "head_motion")
                col.prop(take, "lip_closure", slider=True)
                col.prop(take, "variation")
            row = layout.row(align=True)
            row.prop(settings, "bake_mode", text="")
            row.operator("emote.bake", icon="NLA")
    layout.separator()
    layout.prop(settings, "exp_pattern")
    layout.operator("emote.create_flame_head", icon="MESH_MONKEY")


def _draw_character(layout: Any, context: Any, mesh: Any) -> None:
    """A character that is not a FLAME head: its mapping's state and quality, set-up buttons."""
    from . import character

    candidate = mesh or context.active_object
    if candidate is None or candidate.type != "MESH" or rig.has_expression_keys(candidate):
        return
    try:
        mapping = character.mapping_of(candidate)
    except character.CharacterError:
        mapping = None
        layout.label(text="Its mapping is damaged: set it up again", icon="ERROR")
    if mapping is not None:
        layout.label(text=f"Character: {character.quality_text(mapping.quality)}",
                     icon="COMMUNITY")
        for note in mapping.notes[:3]:
            layout.label(text=note, icon="INFO")
    else:
        layout.label(text=f"'{candidate.name}' is not set up as a character", icon="INFO")
    row = layout.row(align=True)
    row.operator("emote.setup_character", icon="MOD_SHRINKWRAP")
    if mapping is not None:
        row.operator("emote.edit_landmarks", text="", icon="EMPTY_AXIS")
        row.operator("emote.export_mapping", text="", icon="EXPORT")


def _draw_dialogue(layout: Any, context: Any) -> None:
    """Dialogue scenes: the active strip's character, characters by channel, batch buttons."""
    scene = compat.sequencer_scene(context)
    editor = scene.sequence_editor
    active = editor.active_strip if editor is not None else None
    box = layout.box()
    box.label(text="Dialogue", icon="SEQ_STRIP_META")
    if active is not None and compat.is_sound_strip(active):
        box.prop(active, "emote_character", text=f"{active.name} by")
    table = context.scene.emote.channel_characters
    for i, entry in enumerate(table):
        row = box.row(align=True)
        row.prop(entry, "channel", text="Channel")
        row.prop(entry, "character", text="")
        row.operator("emote.channel_character", text="", icon="REMOVE").index = i
    box.operator("emote.channel_character", text="Character per Channel", icon="ADD")
    if not generation.STATE.running:
        row = box.row(align=True)
        row.operator("emote.generate_dialogue", icon="PLAY_SOUND")
        row.operator("emote.bake_dialogue", icon="NLA")


class _EmotePanel:
    bl_label = "EMOTE Lip-Sync"
    bl_region_type = "UI"
    bl_category = "EMOTE"

    def draw(self, context: Any) -> None:
        draw_emote(self.layout, context)


class EMOTE_PT_view3d(_EmotePanel, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class EMOTE_PT_sequencer(_EmotePanel, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


CLASSES = (EMOTE_UL_takes, EMOTE_PT_view3d, EMOTE_PT_sequencer)
