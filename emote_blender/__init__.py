# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE Emotional Lip-Sync: speech + emotion → FLAME shape-key and jaw keys, through a local
inference worker (Blender's own Python by default). Registration only; see the other modules."""

from __future__ import annotations

import bpy

from . import generation, operators, panels, preferences, properties

_CLASSES = (*preferences.CLASSES, *operators.CLASSES, *panels.CLASSES)


def register() -> None:
    properties.register()
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    generation.register()


def unregister() -> None:
    generation.unregister()  # stops the worker, the timer and the file-load handler
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
    properties.unregister()
