# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: the worker's Python, the model, the FLAME file, the device."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

ADDON_ROOT = Path(__file__).resolve().parent


def default_python() -> str:
    """The project's own venv when the add-on runs from (or next to) a checkout, or
    ``EMOTE_WORKER_PYTHON``."""
    configured = os.environ.get("EMOTE_WORKER_PYTHON", "")
    if configured:
        return configured
    for folder in (ADDON_ROOT, *ADDON_ROOT.parents[:3]):
        candidate = folder / ".venv" / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    return ""


def preferences(context: Any = None) -> Any:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class EmotePreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python: StringProperty(
        name="Worker Python", subtype="FILE_PATH", default=default_python(),
        description="Python interpreter with torch that runs the inference worker")
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


def check_python(python: str) -> str:
    """"torch 2.13.0, CUDA no" for ``python``, or a sentence saying what is wrong."""
    if not python or not Path(python).is_file():
        return f"'{python}' does not exist."
    code = ("import torch, transformers, smplx; "
            "print(torch.__version__, torch.cuda.is_available())")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Could not run '{python}': {exc}."
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"Not usable: {last}"
    version, cuda = out.stdout.split()
    return f"torch {version}, CUDA {'yes' if cuda == 'True' else 'no'}"


CLASSES = (EmotePreferences,)
