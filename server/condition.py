# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-frame condition EMOTE is driven by:
[emotion one-hot | intensity one-hot | style one-hot].

With the official model that is 8 + 3 + 32 = 43 numbers. The style map is linear, so convex
mixtures (70 % Happy + 30 % Surprise) and per-frame changing conditions are valid inputs.

Mixture weights must be numbers from 0 to :data:`MAX_CONDITION_VALUE`, each name given once;
every number of a raw condition array must lie within ±:data:`MAX_CONDITION_VALUE`. One-hot
conditions hold ones, so 10 leaves room to exaggerate an emotion while keeping the network far
from the magnitudes (1e30) where it overflows to NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, Union

import numpy as np

# A part of the condition: a name or index, or a mixture {name or index: weight}.
Choice = Union[str, int, Mapping[Any, float]]

MAX_CONDITION_VALUE = 10.0  # the largest mixture weight, and magnitude in a condition array
NPY_MAGIC = b"\x93NUMPY"


class ConditionError(ValueError):
    """The requested emotion, intensity, style or condition array does not fit the model."""


@dataclass(frozen=True)
class ConditionSpace:
    emotions: tuple[str, ...]
    intensities: tuple[str, ...]
    styles: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.emotions) + len(self.intensities) + len(self.styles)

    def _one_hot(self, names: tuple[str, ...], choice: Choice, what: str) -> np.ndarray:
        vector = np.zeros(len(names))
        mixture = choice if isinstance(choice, Mapping) else {choice: 1.0}
        given: dict[int, Any] = {}
        for key, weight in mixture.items():
            index = self._index(names, key, what)
            if index in given:
                raise ConditionError(
                    f"The {what} {names[index]} is given twice ('{given[index]}' and '{key}'); "
                    "give each name once with its total weight.")
            given[index] = key
            vector[index] = _weight(weight, key, what)
        return vector

    @staticmethod
    def _index(names: tuple[str, ...], key: Any, what: str) -> int:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if 0 <= int(key) < len(names):
                return int(key)
        elif isinstance(key, str):
            if key.strip().isdigit():
                return ConditionSpace._index(names, int(key), what)
            lowered = [n.lower() for n in names]
            if key.strip().lower() in lowered:
                return lowered.index(key.strip().lower())
        raise ConditionError(f"Unknown {what} '{key}'. Choose one of: {', '.join(names)} "
                             f"(or an index 0–{len(names) - 1}).")

    def vector(self, emotion: Choice = "Neutral", intensity: Choice = 2,
               style: Choice = 0) -> np.ndarray:
        """One condition vector (C,) from names, indices or mixtures."""
        return np.concatenate([
            self._one_hot(self.emotions, emotion, "emotion"),
            self._one_hot(self.intensities, intensity, "intensity"),
            self._one_hot(self.styles, style, "speaking style"),
        ])

    def per_frame(self, condition: Any, frames: int) -> np.ndarray:
        """A (T, C) float32 array from a (C,) or (N, C) array, or a dict of
        ``emotion``/``intensity``/``style`` choices. In the dict, a field may also be a list of
        N choices (a curve: one per sample, e.g. ``{"emotion": ["Neutral", {"Anger": 1}, …],
        "style": 3}``); curves must have the same N. An (N, C) condition with N ≠ T is spread
        over the clip by linear interpolation, so a condition curve sampled at any rate fits."""
        if isinstance(condition, Mapping):
            condition = self._from_fields(condition)
        if not _numbers_only(condition):
            raise ConditionError(
                "A condition array must hold numbers only, in rows of equal length; use a "
                "dict of emotion/intensity/style names for names.")
        array = np.asarray(condition, dtype=np.float64)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != self.size or array.shape[0] == 0:
            raise ConditionError(
                f"A condition must have shape ({self.size},) or (frames, {self.size}) for this "
                f"model ({len(self.emotions)} emotions + {len(self.intensities)} intensities + "
                f"{len(self.styles)} styles); got {tuple(np.shape(condition))}.")
        if not np.all(np.isfinite(array)):
            raise ConditionError("The condition contains NaN or infinite values.")
        if np.abs(array).max() > MAX_CONDITION_VALUE:
            raise ConditionError(
                f"The condition holds {np.abs(array).max():g}; its numbers must lie within "
                f"±{MAX_CONDITION_VALUE:g} (a one-hot condition holds ones).")
        if array.shape[0] == 1:
            return np.repeat(array, frames, axis=0).astype(np.float32)
        if array.shape[0] != frames:
            source = np.linspace(0.0, 1.0, array.shape[0])
            target = np.linspace(0.0, 1.0, frames)
            array = np.stack([np.interp(target, source, col) for col in array.T], axis=1)
        return array.astype(np.float32)

    def _from_fields(self, condition: Mapping[str, Any]) -> np.ndarray:
        unknown = set(condition) - {"emotion", "intensity", "style"}
        if unknown:
            raise ConditionError(f"Unknown condition field(s): {', '.join(sorted(unknown))}.")
        fields = {"emotion": condition.get("emotion", "Neutral"),
                  "intensity": condition.get("intensity", 2), "style": condition.get("style", 0)}
        curves = {k: v for k, v in fields.items()
                  if isinstance(v, Sequence) and not isinstance(v, str)}
        if not curves:
            return self.vector(**fields)
        lengths = {len(v) for v in curves.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ConditionError("Condition curves must be non-empty and of equal length; got "
                                 + ", ".join(f"{k}: {len(v)}" for k, v in curves.items()) + ".")
        n = lengths.pop()
        return np.stack([self.vector(**{k: (v[i] if k in curves else v)
                                        for k, v in fields.items()}) for i in range(n)])

    def describe(self, vector: np.ndarray) -> str:
        """A short label such as "Happy · strong · M003" for a (C,) vector (largest weights)."""
        ne, ni = len(self.emotions), len(self.intensities)
        parts = []
        for names, values in ((self.emotions, vector[:ne]), (self.intensities, vector[ne:ne + ni]),
                              (self.styles, vector[ne + ni:])):
            order = np.argsort(-values)
            if values[order[0]] <= 0:
                continue
            if len(order) > 1 and values[order[1]] > 0:
                parts.append(f"{names[order[0]]} {values[order[0]]:.0%} + {names[order[1]]}")
            else:
                parts.append(names[order[0]])
        return " · ".join(parts)


def _numbers_only(condition: Any) -> bool:
    """True for a numeric array, or nested lists of real numbers (not null, text or true/false)
    in rows of equal length."""
    if isinstance(condition, np.ndarray):
        return condition.dtype.kind in "iuf"
    try:
        values = np.asarray(condition, dtype=object)
    except ValueError:  # rows of unequal length
        return False
    return all(isinstance(v, Real) and not isinstance(v, bool) for v in values.flat)


def _weight(weight: Any, key: Any, what: str) -> float:
    """A mixture weight: a real number from 0 to :data:`MAX_CONDITION_VALUE`."""
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise ConditionError(f"The weight of the {what} '{key}' must be a number; got "
                             f"{weight!r}.")
    value = float(weight)
    if not np.isfinite(value):
        raise ConditionError(f"The {what} weights must be finite numbers.")
    if value < 0:
        raise ConditionError(f"The weight of the {what} '{key}' is {value:g}: weights must not "
                             "be negative (a mixture adds emotions, it cannot subtract one).")
    if value > MAX_CONDITION_VALUE:
        raise ConditionError(f"The weight of the {what} '{key}' is {value:g}: weights must be "
                             f"at most {MAX_CONDITION_VALUE:g} (1 is the full {what}).")
    return value


def read_condition_file(path: Path) -> np.ndarray:
    """A condition array from a ``.npy`` file (never a pickle), with a sentence for anything
    else; its shape and values are checked by :meth:`ConditionSpace.per_frame`."""
    path = Path(path)
    if not path.is_file():
        raise ConditionError(f"Condition file not found: '{path}'.")
    with open(path, "rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ConditionError(f"'{path}' is not a .npy file (it lacks NumPy's header); save "
                                 "the condition with numpy.save.")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ConditionError(f"'{path}' is not a readable .npy array: {exc}") from exc


def space_from_names(emotions: Sequence[str], intensities: Sequence[str],
                     styles: Sequence[str]) -> ConditionSpace:
    return ConditionSpace(tuple(emotions), tuple(intensities), tuple(styles))
