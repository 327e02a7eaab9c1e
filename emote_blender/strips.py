# SPDX-License-Identifier: GPL-3.0-or-later
"""Sound strips of the sequencer → what the worker needs: a file, seconds, and frame placement."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from . import compat


class StripError(ValueError):
    """No usable sound strip; the message says what to do."""


@dataclass
class AudioRequest:
    """The audio of one strip: the file, the part of it the strip plays, and where."""

    path: str
    start: float  # seconds into the file
    end: float
    strip_name: str
    strip_start: float  # content start: where file time 0 would play, before sound_offset
    frame_start: int  # first scene frame the strip plays
    frame_end: int  # one past the last
    fps: float
    sound_offset: float
    temporary: bool = False  # a packed sound written out for the worker

    def cleanup(self) -> None:
        if self.temporary:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def find_sound_strip(context: Any, name: str = "") -> Any:
    """The named strip, else the active sound strip, else the first selected sound strip."""
    scene = compat.sequencer_scene(context)
    strips = compat.all_strips(scene)
    if name:
        for strip in strips:
            if strip.name == name:
                if not compat.is_sound_strip(strip):
                    raise StripError(f"The strip '{name}' is not a sound strip.")
                return strip
        raise StripError(f"There is no strip named '{name}' in the sequencer.")
    editor = scene.sequence_editor
    active = editor.active_strip if editor is not None else None
    if active is not None and compat.is_sound_strip(active):
        return active
    selected = sorted((s for s in strips if compat.is_sound_strip(s) and s.select),
                      key=lambda s: (compat.strip_first_frame(s), s.channel))
    if selected:
        return selected[0]
    raise StripError("No sound strip is selected. Add the dialogue to the Video Sequencer and "
                     "select its strip.")


def audio_request(scene: Any, strip: Any) -> AudioRequest:
    """The file and the trimmed range of ``strip``, at the scene's frame rate."""
    sound = strip.sound
    if sound is None:
        raise StripError(f"The strip '{strip.name}' has no sound data.")
    fps = scene.render.fps / scene.render.fps_base
    offset = float(getattr(strip, "sound_offset", 0.0))  # 4.4+: delays the sound
    content_start = compat.strip_content_start(strip)
    first_frame, end_frame = compat.strip_first_frame(strip), compat.strip_end_frame(strip)
    start = (first_frame - content_start) / fps - offset
    end = (end_frame - content_start) / fps - offset
    if end <= max(start, 0.0):
        raise StripError(f"The strip '{strip.name}' plays no audio (its range is empty).")
    temporary = False
    if sound.packed_file is not None:
        suffix = Path(sound.filepath).suffix or ".wav"
        handle, path = tempfile.mkstemp(prefix="emote-", suffix=suffix)
        with os.fdopen(handle, "wb") as f:
            f.write(sound.packed_file.data)
        temporary = True
    else:
        path = bpy.path.abspath(sound.filepath, library=sound.library)
        path = os.path.normpath(path)
        if not os.path.isfile(path):
            raise StripError(f"The sound file of strip '{strip.name}' is missing: '{path}'. "
                             "Relocate it (File ▸ External Data ▸ Find Missing Files).")
    return AudioRequest(path=path, start=max(start, 0.0), end=end, strip_name=strip.name,
                        strip_start=float(content_start), frame_start=int(first_frame),
                        frame_end=int(end_frame), fps=fps, sound_offset=offset,
                        temporary=temporary)
