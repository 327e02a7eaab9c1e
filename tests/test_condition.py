# SPDX-License-Identifier: GPL-3.0-or-later
"""The condition: names, mixtures and arrays in, one (T, C) array out, or one sentence."""

import os

import numpy as np
import pytest

from server.condition import (
    MAX_CONDITION_VALUE,
    ConditionError,
    read_condition_file,
    space_from_names,
)
from server.protocol import EMOTIONS, INTENSITIES, MEAD_STYLES

SPACE = space_from_names(EMOTIONS, INTENSITIES, MEAD_STYLES)


def test_a_mixture_is_its_weights():
    vector = SPACE.vector({"Happy": 0.7, "Surprise": 0.3}, "strong", "M005")
    assert vector[1] == pytest.approx(0.7) and vector[3] == pytest.approx(0.3)
    assert vector[10] == 1 and vector[12] == 1 and vector.sum() == pytest.approx(3.0)


@pytest.mark.parametrize("emotion,message", [
    ({"Happy": -1, "Sad": 2}, "must not be negative"),
    ({"Happy": 1e30}, "must be at most 10"),
    ({"Happy": float("inf")}, "must be finite"),
    ({"Happy": None}, "must be a number; got None"),
    ({"Happy": "0.5"}, "must be a number; got '0.5'"),
    ({"Happy": True}, "must be a number; got True"),
    ({"Happy": 1, "happy": 1}, "Happy is given twice \\('Happy' and 'happy'\\)"),
    ({"1": 0.5, "Happy": 0.5}, "Happy is given twice \\('1' and 'Happy'\\)"),
])
def test_bad_mixtures_are_refused_with_a_sentence(emotion, message):
    with pytest.raises(ConditionError, match=message):
        SPACE.per_frame({"emotion": emotion}, 10)


def test_a_mixture_in_a_curve_is_checked_too():
    with pytest.raises(ConditionError, match="must not be negative"):
        SPACE.per_frame({"emotion": ["Happy", {"Sad": -0.5}]}, 10)


@pytest.mark.parametrize("value", [1e30, -1e30, MAX_CONDITION_VALUE * 1.01])
def test_arrays_beyond_the_bound_are_refused(value):
    array = np.zeros(43)
    array[[0, 10, 11]] = 1
    array[5] = value
    with pytest.raises(ConditionError, match="must lie within ±10"):
        SPACE.per_frame(array, 10)
    array[5] = MAX_CONDITION_VALUE
    assert SPACE.per_frame(array, 10).shape == (10, 43)


@pytest.mark.parametrize("condition", [["a"] * 43, [[1.0] * 43, [1.0] * 3], [None] * 43])
def test_arrays_of_non_numbers_are_refused_with_a_sentence(condition):
    with pytest.raises(ConditionError, match="must hold numbers only"):
        SPACE.per_frame(condition, 10)


def test_a_condition_file_of_random_bytes_is_not_a_npy_file(tmp_path):
    path = tmp_path / "noise.npy"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ConditionError, match="is not a .npy file"):
        read_condition_file(path)
    good = tmp_path / "good.npy"
    np.save(good, np.ones(43))
    np.testing.assert_array_equal(read_condition_file(good), np.ones(43))
    with pytest.raises(ConditionError, match="not found"):
        read_condition_file(tmp_path / "missing.npy")
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ConditionError, match="is not a readable .npy array"):
        read_condition_file(truncated)
    assert os.path.exists(good)
