# SPDX-License-Identifier: GPL-3.0-or-later
"""The training dataset format and its reader.

A dataset is a folder with ``index.json`` and one ``.npz`` per sequence:

``<name>.npz``: ``audio`` (S,) float32 at 16 kHz in [-1, 1]; ``expression`` (T, 100) and
``jaw`` (T, 3) FLAME parameters at 25 fps (pseudo ground truth); ``shape`` (300,);
``validity`` (T,) bool (frames whose tracking is trusted); ``emotion`` (int, 0–7 in the order
Neutral Happy Sad Surprise Fear Disgust Anger Contempt); ``intensity`` (int, 1–3); ``identity``
(str); optionally ``video`` (str, a folder of aligned face frames, for stage 2) and
``phones`` (T,) int16: each frame's phone as an index into the index's ``phones`` list, -1 where
unknown (for stage 1's optional phone-recognition loss).

``index.json``: ``{"version": 1, "identities": [training identities, in style order],
"sequences": [{"file": "<name>.npz", "split": "train"|"val"|"test", "identity": str,
"emotion": int, "intensity": int, "frames": T}, ...]}``, optionally ``"phones": [phone names]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import SAMPLES_PER_FRAME
from ..protocol import EMOTIONS, INTENSITIES

INDEX_VERSION = 1
N_EMOTIONS, N_INTENSITIES = len(EMOTIONS), len(INTENSITIES)


def write_sequence(path: Path, audio: np.ndarray, expression: np.ndarray, jaw: np.ndarray,
                   emotion: int, intensity: int, identity: str,
                   shape: np.ndarray | None = None, validity: np.ndarray | None = None,
                   video: str | None = None, phones: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """Write one sequence file; returns its index entry (without the split)."""
    frames = len(expression)
    if jaw.shape != (frames, 3):
        raise ValueError(f"jaw must be ({frames}, 3), got {jaw.shape}")
    if not 0 <= emotion < N_EMOTIONS or not 1 <= intensity <= N_INTENSITIES:
        raise ValueError(f"emotion must be 0–7 and intensity 1–3 (got {emotion}, {intensity})")
    arrays = {
        "audio": np.asarray(audio, np.float32), "expression": np.asarray(expression, np.float32),
        "jaw": np.asarray(jaw, np.float32),
        "shape": np.zeros(300, np.float32) if shape is None else np.asarray(shape, np.float32),
        "validity": np.ones(frames, bool) if validity is None else np.asarray(validity, bool),
        "emotion": np.asarray(emotion), "intensity": np.asarray(intensity),
        "identity": np.asarray(identity),
    }
    if video:
        arrays["video"] = np.asarray(video)
    if phones is not None:
        if np.shape(phones) != (frames,):
            raise ValueError(f"phones must be ({frames},), got {np.shape(phones)}")
        arrays["phones"] = np.asarray(phones, np.int16)
    np.savez(path, **arrays)
    return {"file": Path(path).name, "identity": identity, "emotion": int(emotion),
            "intensity": int(intensity), "frames": int(frames)}


def write_index(folder: Path, entries: list[dict[str, Any]], identities: list[str],
                phones: list[str] | None = None) -> Path:
    path = Path(folder) / "index.json"
    index: dict[str, Any] = {"version": INDEX_VERSION, "identities": identities}
    if phones:
        index["phones"] = list(phones)
    path.write_text(json.dumps({**index, "sequences": entries}, indent=1))
    return path


def read_index(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "index.json"
    if not path.is_file():
        raise ValueError(f"'{folder}' is not a training dataset: it has no index.json.")
    index = json.loads(path.read_text())
    if index.get("version") != INDEX_VERSION:
        raise ValueError(f"'{path}' has an unknown version {index.get('version')!r}.")
    return index


class SequenceWindows(Dataset):
    """Random fixed-length windows of the sequences of one split.

    Each item: ``audio`` (frames·640,), ``motion`` (frames, 103) = [expression, jaw],
    ``mask`` (frames,) float (0 for padding and untrusted frames), ``condition`` (C,) one-hot
    emotion | intensity | identity, ``emotion`` and ``intensity`` indices, and where the dataset
    lists ``phones``, ``phones`` (frames,) long (-1: unknown or padding). Clips shorter than
    the window start at 0 and are zero-padded. Identities outside the training list (val/test)
    get a fixed pseudo-random training identity.
    """

    def __init__(self, folder: Path, split: str, frames: int, seed: int = 0,
                 windows_per_epoch: int | None = None, motion_only: bool = False) -> None:
        self.folder = Path(folder)
        index = read_index(self.folder)
        self.identities = list(index["identities"])
        self.phone_set: list[str] = list(index.get("phones") or [])
        self.entries = [e for e in index["sequences"] if e.get("split", "train") == split]
        if not self.entries:
            raise ValueError(f"The dataset '{folder}' has no '{split}' sequences.")
        self.frames = frames
        self.seed = seed
        self.motion_only = motion_only
        self.length = windows_per_epoch or len(self.entries)
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        rng = np.random.default_rng(12345)
        self._stand_in = {e["identity"]: int(rng.integers(len(self.identities)))
                          for e in index["sequences"] if e["identity"] not in self.identities}
        self.epoch = 0

    @property
    def condition_dim(self) -> int:
        return N_EMOTIONS + N_INTENSITIES + len(self.identities)

    def __len__(self) -> int:
        return self.length

    def _load(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._cache:
            with np.load(self.folder / name, allow_pickle=False) as data:
                self._cache[name] = {k: data[k] for k in data.files}
        return self._cache[name]

    def condition(self, entry: dict[str, Any]) -> np.ndarray:
        vector = np.zeros(self.condition_dim, np.float32)
        vector[int(entry["emotion"])] = 1
        vector[N_EMOTIONS + int(entry["intensity"]) - 1] = 1
        identity = entry["identity"]
        index = self.identities.index(identity) if identity in self.identities else \
            self._stand_in[identity]
        vector[N_EMOTIONS + N_INTENSITIES + index] = 1
        return vector

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, item))
        entry = self.entries[item % len(self.entries)]
        data = self._load(entry["file"])
        total = len(data["expression"])
        start = int(rng.integers(0, total - self.frames)) if total > self.frames else 0
        stop = min(total, start + self.frames)
        n = stop - start
        motion = np.zeros((self.frames, 103), np.float32)
        motion[:n, :100] = data["expression"][start:stop]
        motion[:n, 100:] = data["jaw"][start:stop]
        mask = np.zeros(self.frames, np.float32)
        mask[:n] = data["validity"][start:stop]
        sample = {"motion": torch.from_numpy(motion), "mask": torch.from_numpy(mask)}
        if not self.motion_only:
            audio = np.zeros(self.frames * SAMPLES_PER_FRAME, np.float32)
            chunk = data["audio"][start * SAMPLES_PER_FRAME: stop * SAMPLES_PER_FRAME]
            audio[: len(chunk)] = chunk
            sample.update(audio=torch.from_numpy(audio),
                          condition=torch.from_numpy(self.condition(entry)),
                          emotion=torch.tensor(int(entry["emotion"])),
                          intensity=torch.tensor(int(entry["intensity"]) - 1))
            if self.phone_set:
                phones = np.full(self.frames, -1, np.int64)
                if "phones" in data:
                    phones[:n] = data["phones"][start:stop]
                sample["phones"] = torch.from_numpy(phones)
        return sample
