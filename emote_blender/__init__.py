# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE Emotional Lip-Sync: speech + emotion → FLAME shape-key and jaw keys, through a local
inference worker (a separate Python with torch). Registration only; see the other modules."""

from __future__ import annotations

import atexit

import bpy

from . import operators, panels, preferences, properties

_CLASSES = (*preferences.CLASSES, *operators.CLASSES, *panels.CLASSES)


def register() -> None:
    properties.register()
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    atexit.register(operators.stop_worker)  # no orphan worker when Blender quits


def unregister() -> None:
    operators.stop_worker()
    atexit.unregister(operators.stop_worker)
    if bpy.app.timers.is_registered(operators._timer):
        bpy.app.timers.unregister(operators._timer)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    properties.unregister()
