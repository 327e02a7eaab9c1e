# SPDX-License-Identifier: GPL-3.0-or-later
"""Convert the official processed-MEAD layout into our training dataset format.

The layout was established from the public inferno sources (``MEADDataModule``,
``MEADPseudo3DDM``, ``FaceVideoDataModule``), not from released files, which were not
available here. Under ``processed/``:

- ``metadata.pkl``: consecutive pickles, the second of which is ``video_list`` (paths relative
  to the MEAD root: ``<ID>/video/<angle>/<emotion>/level_<k>/<nnn>.mp4``);
- ``audio/<ID>/front/<emotion>/level_<k>/<nnn>.wav``;
- ``reconstructions/EMICA-MEAD_flame2020/<…>/shape_pose_cam.hdf5`` with datasets ``exp``,
  ``jaw`` and ``shape`` shaped (1, T, D);
- ``landmarks_original/mediapipe/<…>/landmarks_alignment_used_frame_indices.pkl``: frames with
  a valid detection (the validity mask; all frames valid when absent).

Only frontal videos are used. Identities are split as ``random_by_identityV2_sorted_70_15_15``:
sorted, per gender (M…, W…), the first ⌊0.7 n⌋ train, up to ⌊0.85 n⌋ validation, the rest test.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio
from ..safe_pickle import load_pickle, load_pickle_stream, read_regular_file
from .data import write_index, write_sequence

EMOTION_FOLDERS = {  # MEAD folder name → index in Neutral Happy Sad Surprise Fear Disgust
    "neutral": 0, "happy": 1, "sad": 2, "surprised": 3, "surprise": 3,  # Anger Contempt
    "fear": 4, "disgusted": 5, "disgust": 5, "angry": 6, "anger": 6, "contempt": 7,
}
RECONSTRUCTION = "EMICA-MEAD_flame2020"


def read_video_list(processed: Path) -> list[str]:
    """The ``video_list`` of ``metadata.pkl`` (its second pickle), read without running code."""
    path = processed / "metadata.pkl"
    data = read_regular_file(path)
    stream = io.BytesIO(data)
    items = []
    while stream.tell() < len(data) and len(items) < 2:
        items.append(load_pickle_stream(stream, source=f"'{path}'"))
    if len(items) < 2 or not isinstance(items[1], (list, tuple)):
        raise ValueError(f"'{processed / 'metadata.pkl'}' does not hold a video list.")
    return [str(v) for v in items[1]]


def split_identities(identities: list[str]) -> dict[str, str]:
    """``random_by_identityV2_sorted_70_15_15``: per gender, sorted, 70/15/15."""
    split = {}
    for gender in ("M", "W"):
        group = sorted(i for i in identities if i.startswith(gender))
        n = len(group)
        for k, identity in enumerate(group):
            split[identity] = "train" if k < math.floor(0.7 * n) else (
                "val" if k < math.floor(0.85 * n) else "test")
    for identity in identities:
        split.setdefault(identity, "train")
    return split


def _parse(video: str) -> tuple[str, str, str, int, str] | None:
    parts = Path(video).with_suffix("").parts
    if len(parts) < 6 or parts[1] != "video" or not parts[4].startswith("level_"):
        return None
    identity, _, angle, emotion, level, name = parts[-6:]
    return identity, angle, emotion.lower(), int(level.split("_")[1]), name


def convert(processed: Path, out: Path) -> dict[str, Any]:
    """Write one ``.npz`` per usable frontal video and ``index.json``; returns a summary."""
    import h5py

    processed = Path(processed)
    out.mkdir(parents=True, exist_ok=True)
    entries, skipped = [], []
    parsed = [(v, _parse(v)) for v in read_video_list(processed)]
    usable = [(v, p) for v, p in parsed if p is not None and p[1] == "front"]
    identities = sorted({p[0] for _, p in usable})
    splits = split_identities(identities)
    for video, (identity, _, emotion, level, name) in usable:
        relative = Path(identity) / "front" / emotion / f"level_{level}" / name
        recon = processed / "reconstructions" / RECONSTRUCTION / relative / "shape_pose_cam.hdf5"
        audio_path = processed / "audio" / relative.with_suffix(".wav")
        if emotion not in EMOTION_FOLDERS or not recon.is_file() or not audio_path.is_file():
            skipped.append(video)
            continue
        with h5py.File(recon, "r") as f:
            expression = np.asarray(f["exp"])[0, :, :100]
            jaw = np.asarray(f["jaw"])[0, :, :3]
            shape = np.asarray(f["shape"])[0].mean(axis=0)[:300] if "shape" in f else None
        frames = min(len(expression), len(jaw))
        validity = np.ones(frames, bool)
        used = (processed / "landmarks_original" / "mediapipe" / relative /
                "landmarks_alignment_used_frame_indices.pkl")
        if used.is_file():
            indices = np.asarray(load_pickle(used), dtype=np.int64)
            validity[:] = False
            validity[indices[indices < frames]] = True
        clip = load_audio(audio_path, allow_low_rate=True)
        name_out = f"{identity}_{emotion}_{level}_{name}.npz"
        entry = write_sequence(out / name_out, clip.samples, expression[:frames], jaw[:frames],
                               EMOTION_FOLDERS[emotion], level, identity, shape=shape,
                               validity=validity)
        entry["split"] = splits[identity]
        entries.append(entry)
    training = sorted({e["identity"] for e in entries if e["split"] == "train"})
    write_index(out, entries, training)
    return {"sequences": len(entries), "skipped": skipped, "identities": training}
