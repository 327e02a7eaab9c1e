# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators: thin layers that gather inputs, call the functions of :mod:`.generation`,
:mod:`.keys` and :mod:`.rig`, and report. ``bpy.ops.emote.generate(wait=True)`` blocks until
the take is applied (scripts, pipelines); from the UI nothing waits for the worker."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from . import generation, keys, rig
from .generation import stop_worker  # noqa: F401  (scripts and tests stop the worker here)
from .preferences import preferences
from .worker import WorkerError


class EMOTE_OT_generate(bpy.types.Operator):
    """Generate emotional lip-sync for the selected audio strip on the FLAME head"""

    bl_idname = "emote.generate"
    bl_label = "Generate Emotional Lip-Sync"
    bl_options = {"REGISTER", "UNDO"}

    wait: BoolProperty(name="Wait", description="Block until the take is applied (scripts)",
                       default=False, options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        try:
            generation.start_generation(context)
        except (ValueError, WorkerError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait:
            level, message = generation.wait_for_generation()
            self.report({level}, message)
            return {"FINISHED"} if level == "INFO" else {"CANCELLED"}
        generation.watch()
        self.report({"INFO"}, "Generating…")
        return {"FINISHED"}


class EMOTE_OT_generate_dialogue(bpy.types.Operator):
    """Generate a take for every selected sound strip, each on its character (the strip's Character, the character of its channel, or the head its name starts with)"""  # noqa: E501

    bl_idname = "emote.generate_dialogue"
    bl_label = "Generate Dialogue"
    bl_options = {"REGISTER", "UNDO"}

    wait: BoolProperty(name="Wait", description="Block until every take is applied (scripts)",
                       default=False, options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        try:
            jobs = generation.start_dialogue(context)
        except (ValueError, WorkerError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait:
            level, message = generation.wait_for_generation()
            self.report({level}, message)
            return {"FINISHED"} if level == "INFO" else {"CANCELLED"}
        generation.watch()
        self.report({"INFO"}, f"Generating {len(jobs)} lines…")
        return {"FINISHED"}


class EMOTE_OT_bake_dialogue(bpy.types.Operator):
    """Commit every selected strip's take to the timeline on its character (the active take when it belongs to the strip, else the strip's newest take)"""  # noqa: E501

    bl_idname = "emote.bake_dialogue"
    bl_label = "Bake Dialogue"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        try:
            lines = generation.dialogue_takes(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        into_actions = context.scene.emote.bake_mode != "NLA"
        for mesh, target, take in lines:
            if into_actions:
                keys.bake_into_actions(mesh, target, take)
            else:
                keys.bake_to_nla(mesh, target, take)
        self.report({"INFO"}, f"Baked {len(lines)} lines.")
        return {"FINISHED"}


class EMOTE_OT_channel_character(bpy.types.Operator):
    """Add or remove a channel's character for dialogue routing"""

    bl_idname = "emote.channel_character"
    bl_label = "Channel Character"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})  # -1: add one

    def execute(self, context: Any) -> set[str]:
        table = context.scene.emote.channel_characters
        if self.index < 0:
            used = {e.channel for e in table}
            table.add().channel = next((c for c in range(1, 129) if c not in used), 128)
        elif self.index < len(table):
            table.remove(self.index)
        return {"FINISHED"}


class EMOTE_OT_cancel(bpy.types.Operator):
    """Cancel the running generation"""

    bl_idname = "emote.cancel"
    bl_label = "Cancel"

    def execute(self, context: Any) -> set[str]:
        if not generation.cancel_generation():
            self.report({"INFO"}, "Nothing is running.")
            return {"CANCELLED"}
        return {"FINISHED"}


class EMOTE_OT_bake(bpy.types.Operator):
    """Commit the active take to the timeline (NLA strips, or into the current actions)"""

    bl_idname = "emote.bake"
    bl_label = "Bake to Timeline"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        try:
            mesh, target, take = generation.active_take(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if context.scene.emote.bake_mode == "NLA":
            keys.bake_to_nla(mesh, target, take)
            self.report({"INFO"}, f"'{take.name}' baked to NLA strips.")
        else:
            keys.bake_into_actions(mesh, target, take)
            self.report({"INFO"}, f"'{take.name}' written into the current actions.")
        return {"FINISHED"}


class EMOTE_OT_take_delete(bpy.types.Operator):
    """Delete the active take and its actions"""

    bl_idname = "emote.take_delete"
    bl_label = "Delete Take"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        try:
            mesh, target, _ = generation.active_take(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        index = self.index if self.index >= 0 else mesh.emote_active_take
        with generation.takes_switched_by_code(mesh):
            keys.delete_take(mesh, target, index)
        return {"FINISHED"}


class EMOTE_OT_create_flame_head(bpy.types.Operator):
    """Create a FLAME head (mesh, Exp/Pose shape keys, armature) from your FLAME file, or the built-in demo head when no file is set"""  # noqa: E501

    bl_idname = "emote.create_flame_head"
    bl_label = "Create FLAME Head"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="FLAME File", subtype="FILE_PATH", default="")

    def execute(self, context: Any) -> set[str]:
        from .server.flame import load_flame_file

        path = self.filepath or preferences(context).flame_path
        if path:
            try:
                flame = load_flame_file(bpy.path.abspath(path))
            except ValueError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            name = "FLAME"
        else:  # no FLAME file: the built-in procedural demo head
            from .server.demo.head import build_demo_head

            flame, name = build_demo_head().flame, "FLAME-demo"
        mesh, armature = rig.create_flame_head(context, flame, name=name)
        for obj in context.selected_objects:
            obj.select_set(False)
        mesh.select_set(True)
        context.view_layer.objects.active = mesh
        self.report({"INFO"}, f"Created '{mesh.name}' with {flame.n_expression} expression "
                              "keys.")
        return {"FINISHED"}


def _character_mesh(context: Any) -> Any:
    obj = context.scene.emote.rig or context.active_object
    if obj is not None and obj.type == "ARMATURE":
        obj = next((c for c in obj.children if c.type == "MESH"), None)
    if obj is None or obj.type != "MESH":
        raise ValueError("Select the character's mesh (the one with its face's shape keys).")
    return obj


class EMOTE_OT_setup_character(bpy.types.Operator):
    """Fit FLAME to the selected character (any shape-key face, ARKit-52 names recognised) and measure its keys, so takes can drive it; uses its landmark empties where you moved them"""  # noqa: E501

    bl_idname = "emote.setup_character"
    bl_label = "Set Up Character"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        from . import character

        try:
            mesh = _character_mesh(context)
            if rig.has_expression_keys(mesh):
                raise ValueError(f"'{mesh.name}' is a FLAME head: it is animated directly and "
                                 "needs no set-up.")
            mapping = character.set_up(mesh, generation.flame_for_setup(context))
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        notes = " ".join(mapping.notes)
        self.report({"INFO"}, f"'{mesh.name}' is set up: it can express "
                              f"{character.quality_text(mapping.quality)} of FLAME's motion. "
                              f"{notes}".strip())
        return {"FINISHED"}


class EMOTE_OT_edit_landmarks(bpy.types.Operator):
    """Show the character's face landmarks as empties to move in the viewport; Set Up Character again uses where they are"""  # noqa: E501

    bl_idname = "emote.edit_landmarks"
    bl_label = "Edit Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        from . import character

        try:
            mesh = _character_mesh(context)
            mapping = character.mapping_of(mesh)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if mapping is None:
            self.report({"ERROR"}, f"'{mesh.name}' is not set up yet: Set Up Character first.")
            return {"CANCELLED"}
        empties = character.show_landmarks(context, mesh, mapping)
        self.report({"INFO"}, f"{len(empties)} landmarks on '{mesh.name}': move them, then Set "
                              "Up Character again.")
        return {"FINISHED"}


class EMOTE_OT_export_mapping(bpy.types.Operator):
    """Write the character's mapping as JSON (for python -m server generate --character)"""

    bl_idname = "emote.export_mapping"
    bl_label = "Export Mapping"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def invoke(self, context: Any, event: Any) -> set[str]:
        if not self.filepath:
            self.filepath = bpy.path.abspath("//character_mapping.json")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        from . import character

        try:
            mesh = _character_mesh(context)
            written = character.export_mapping(mesh, bpy.path.abspath(self.filepath))
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote the mapping of '{mesh.name}' to {written}.")
        return {"FINISHED"}


class EMOTE_OT_check_worker(bpy.types.Operator):
    """Start the worker and say which inference backends it has (ONNX Runtime, torch, CUDA)"""

    bl_idname = "emote.check_worker"
    bl_label = "Check Worker"

    _timer: Any = None

    def execute(self, context: Any) -> set[str]:
        # Scripts: wait for the worker's answer (bounded by its start timeout).
        level, message = generation.check_worker(context, wait=True)
        return self._report(level, message)

    def invoke(self, context: Any, event: Any) -> set[str]:
        result = generation.check_worker(context, wait=False)
        if result is not None:
            return self._report(*result)
        self.report({"INFO"}, "Starting the worker…")
        manager = context.window_manager
        self._timer = manager.event_timer_add(0.1, window=context.window)
        manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[str]:
        if event.type == "ESC":
            self._stop_timer(context)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        result = generation.check_worker(context, wait=False)
        if result is None:
            return {"RUNNING_MODAL"}
        self._stop_timer(context)
        return self._report(*result)

    def _stop_timer(self, context: Any) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None

    def _report(self, level: str, message: str) -> set[str]:
        self.report({level}, message)
        return {"FINISHED"} if level == "INFO" else {"CANCELLED"}


CLASSES = (EMOTE_OT_generate, EMOTE_OT_generate_dialogue, EMOTE_OT_bake_dialogue,
           EMOTE_OT_channel_character, EMOTE_OT_cancel, EMOTE_OT_bake, EMOTE_OT_take_delete,
           EMOTE_OT_create_flame_head, EMOTE_OT_setup_character, EMOTE_OT_edit_landmarks,
           EMOTE_OT_export_mapping, EMOTE_OT_check_worker)
