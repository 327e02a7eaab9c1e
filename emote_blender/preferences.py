# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: the worker's Python, the model, the FLAME file, the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

ADDON_ROOT = Path(__file__).resolve().parent


def preferences(context: Any = None) -> Any:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class EmotePreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python: StringProperty(
        name="Worker Python", subtype="FILE_PATH", default="",
        description="Empty: Blender's own Python runs the worker (ONNX Runtime, CPU). Or a "
                    "Python with torch (e.g. for CUDA). EMOTE_WORKER_PYTHON sets it when empty")
    model_kind: EnumProperty(name="Model", items=[
        ("DEMO", "Built-in Demo", "The small demo model trained on synthetic speech for the "
                                  "demo head (ships with the add-on)"),
        ("OFFICIAL", "Official EMOTE v2", "The EMOTE_v2 folder of the official release"),
        ("BUNDLE", "Bundle", "A model bundle (config.json + model.safetensors)")],
        default="DEMO")
    model_path: StringProperty(
        name="Model Folder", subtype="DIR_PATH",
        description="EMOTE_v2 folder (official) or bundle folder")
    assets_path: StringProperty(
        name="Assets Root", subtype="DIR_PATH",
        description="Folder holding MotionPrior/ (default: three levels above EMOTE_v2)")
    flame_path: StringProperty(
        name="FLAME File", subtype="FILE_PATH",
        description="Your FLAME model file (generic_model.pkl / flame2023.pkl); empty: the "
                    "built-in demo head")
    device: EnumProperty(name="Device", items=[
        ("auto", "Auto", "CUDA when available, else CPU"), ("cpu", "CPU", "Always the CPU"),
        ("cuda", "CUDA", "An NVIDIA GPU")], default="auto")
    idle_minutes: IntProperty(
        name="Idle Shutdown (minutes)", default=30, min=0,
        description="Stop the worker after this long unused (0: never)")

    def draw(self, context: Any) -> None:
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python")
        row.operator("emote.check_worker", text="Check", icon="CHECKMARK")
        if not self.python:
            layout.label(text="The worker runs in Blender's own Python (ONNX Runtime, CPU).",
                         icon="INFO")
        layout.prop(self, "model_kind")
        if self.model_kind != "DEMO":
            layout.prop(self, "model_path")
        if self.model_kind == "OFFICIAL":
            layout.prop(self, "assets_path")
        layout.prop(self, "flame_path")
        if not self.flame_path:
            layout.label(text="No FLAME file: Create FLAME Head makes the built-in demo head.",
                         icon="INFO")
        layout.prop(self, "device")
        layout.prop(self, "idle_minutes")


CLASSES = (EmotePreferences,)
