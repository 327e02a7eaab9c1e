# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine: windows, cache, conditions, determinism, cancellation."""

import threading
from unittest import mock

import numpy as np
import pytest
import torch

from server.animator import Animator, Cancelled, crossfade, plan_windows
from server.audio import SAMPLES_PER_FRAME, clip_from_samples, normalise
from server.checkpoints import LoadedModel
from server.condition import ConditionError
from tests.builders import random_model, speech_like

HAPPY = {"emotion": "Happy", "intensity": 2, "style": "M003"}
SAD = {"emotion": "Sad", "intensity": 0, "style": "M003"}


@pytest.fixture(scope="module")
def loaded():
    model = random_model(seed=21)
    return LoadedModel(model=model, config=model.config, kind="test", source=None,
                       flint_source="")


def whole_clip(model, clip, condition_vector):
    """Steps 1–11 on the whole clip in one call, no windows, no cache."""
    frames = clip.frames
    wave = torch.from_numpy(normalise(clip.samples[: frames * SAMPLES_PER_FRAME]))[None]
    with torch.no_grad():
        features = model.encode_audio(wave, frames)
        condition = torch.from_numpy(np.repeat(condition_vector[None], frames, 0))[None].float()
        return model.decode(features, condition)[0].double().numpy()


def test_clip_that_fits_one_window_equals_whole_clip_exactly(loaded):
    clip = clip_from_samples(speech_like(9.3, seed=1))
    animator = Animator(loaded, device="cpu", window=240, overlap=48)
    assert clip.frames == 232
    take = animator.generate(clip, HAPPY)
    expected = whole_clip(loaded.model, clip, animator.space.vector("Happy", 2, "M003"))
    np.testing.assert_array_equal(take.expression, expected[:, :100].astype(np.float32))
    np.testing.assert_array_equal(take.jaw, expected[:, 100:].astype(np.float32))


def test_default_window_takes_48_seconds_whole(loaded):
    assert Animator(loaded, device="cpu").window >= 1200
    assert plan_windows(1200, 1200, 96) == [(0, 1200)]


def test_windows_cover_the_clip_on_the_latent_grid():
    for frames in (1201, 1300, 1500, 2500, 2305, 15000, 15001):
        windows = plan_windows(frames, 1200, 96)
        assert windows[0][0] == 0 and windows[-1][1] == frames
        for (s0, e0), (s1, e1) in zip(windows[:-1], windows[1:], strict=True):
            assert s1 % 8 == 0 and s0 < s1 and e0 - s1 >= 96 and e0 < e1  # overlap, advance
        assert all(e - s <= 1200 for s, e in windows)
        assert len(windows) == -(-(frames - 96) // (1200 - 96))  # as few as possible
        work = sum(e - s for s, e in windows)
        assert work <= frames + (len(windows) - 1) * (96 + 8)


def test_crossfade_is_continuous_for_constant_parts():
    windows = [(0, 10), (6, 16)]
    parts = [np.ones((10, 2)), 3 * np.ones((10, 2))]
    out = crossfade(parts, windows, 16)
    assert np.all(out[:6] == 1) and np.all(out[10:] == 3)
    assert np.all(np.diff(out[:, 0]) >= 0) and np.all(np.diff(out[5:11, 0]) < 1)


def test_long_clip_seams_are_continuous(loaded):
    clip = clip_from_samples(speech_like(40.0, seed=2))
    animator = Animator(loaded, device="cpu", window=240, overlap=64)
    take = animator.generate(clip, HAPPY)
    windows = plan_windows(clip.frames, 240, 64)
    assert len(windows) >= 5
    motion = np.concatenate([take.expression, take.jaw], axis=1).astype(np.float64)
    jumps = np.abs(np.diff(motion, axis=0)).max(axis=1)  # jump from frame t to t+1
    seam = np.zeros(len(jumps), bool)
    for (start, _), (_, end) in zip(windows[1:], windows[:-1], strict=True):
        seam[start - 1: end] = True  # entering, inside and leaving each overlap
    assert jumps[seam].max() <= jumps[~seam].max()


def test_regeneration_reuses_audio_features(loaded):
    clip = clip_from_samples(speech_like(4.0, seed=3))
    animator = Animator(loaded, device="cpu")
    with mock.patch.object(loaded.model.audio_model, "forward",
                           wraps=loaded.model.audio_model.forward) as wav2vec2:
        happy = animator.generate(clip, HAPPY)
        sad = animator.generate(clip, SAD)
        again = animator.generate(clip_from_samples(speech_like(4.0, seed=3)), HAPPY)
    assert wav2vec2.call_count == 1
    assert animator.stats["audio_encodes"] == 1 and animator.stats["cache_hits"] == 2
    assert np.abs(happy.expression - sad.expression).max() > 1e-4
    np.testing.assert_array_equal(happy.expression, again.expression)


def test_cache_is_bounded(loaded):
    animator = Animator(loaded, device="cpu", cache_size=2)
    for seed in range(4):
        animator.encode(clip_from_samples(speech_like(1.0, seed=seed)))
    assert len(animator._cache) == 2
    assert animator.cached(clip_from_samples(speech_like(1.0, seed=3)))
    assert not animator.cached(clip_from_samples(speech_like(1.0, seed=0)))


def test_deterministic_across_instances(loaded):
    clip = clip_from_samples(speech_like(3.0, seed=4))
    first = Animator(loaded, device="cpu").generate(clip, HAPPY)
    second = Animator(loaded, device="cpu").generate(clip, HAPPY)
    np.testing.assert_array_equal(first.expression, second.expression)
    np.testing.assert_array_equal(first.jaw, second.jaw)


def test_condition_forms_agree(loaded):
    animator = Animator(loaded, device="cpu")
    clip = clip_from_samples(speech_like(2.0, seed=5))
    space = animator.space
    vector = space.vector({"Happy": 0.7, "Surprise": 0.3}, "medium", "W029")
    assert vector.shape == (43,) and vector[1] == 0.7 and vector[3] == 0.3 and vector[9] == 1
    assert vector[42] == 1
    by_names = animator.generate(clip, {"emotion": {"Happy": 0.7, "Surprise": 0.3},
                                        "intensity": 1, "style": 31})
    by_vector = animator.generate(clip, vector)
    by_frames = animator.generate(clip, np.repeat(vector[None], clip.frames, 0))
    np.testing.assert_array_equal(by_names.expression, by_vector.expression)
    np.testing.assert_array_equal(by_names.expression, by_frames.expression)
    assert by_names.label.startswith("Happy 70% + Surprise")


def test_per_frame_condition_changes_emotion_over_time(loaded):
    animator = Animator(loaded, device="cpu")
    clip = clip_from_samples(speech_like(6.0, seed=6))
    calm = animator.space.vector("Neutral", 0, 0)
    angry = animator.space.vector("Anger", 2, 0)
    curve = np.stack([calm, calm, angry, angry])  # 4 key rows spread over the clip
    take = animator.generate(clip, curve)
    assert np.allclose(take.condition[0], calm) and np.allclose(take.condition[-1], angry)
    middle = take.condition[clip.frames // 2]
    assert 0 < middle[6] < 1  # in transition
    start_only_calm = animator.generate(clip, calm)
    end_only_angry = animator.generate(clip, angry)
    assert np.abs(take.expression[:20] - start_only_calm.expression[:20]).max() < \
        np.abs(take.expression[:20] - end_only_angry.expression[:20]).max()


def test_condition_curves_by_field_match_rows(loaded):
    """Per-frame fields (the add-on's animated emotion) give the same rows as a (N, C) array,
    without the sender knowing the model's number of styles."""
    space = Animator(loaded, device="cpu").space
    fields = {"emotion": ["Neutral", {"0": 0.5, "6": 0.5}, {"Anger": 1.0}],
              "intensity": [0, 1, 2], "style": "W029"}
    rows = np.stack([space.vector("Neutral", 0, "W029"),
                     space.vector({"Neutral": 0.5, "Anger": 0.5}, 1, "W029"),
                     space.vector("Anger", 2, "W029")])
    np.testing.assert_array_equal(space.per_frame(fields, 3), rows.astype(np.float32))
    np.testing.assert_array_equal(space.per_frame(fields, 9), space.per_frame(rows, 9))
    with pytest.raises(ConditionError, match="equal length"):
        space.per_frame({"emotion": ["Happy", "Sad"], "intensity": [0, 1, 2]}, 5)


def test_bad_conditions_are_explained(loaded):
    animator = Animator(loaded, device="cpu")
    clip = clip_from_samples(speech_like(1.0))
    with pytest.raises(ConditionError, match="Unknown emotion 'Joy'"):
        animator.generate(clip, {"emotion": "Joy"})
    with pytest.raises(ConditionError, match=r"shape \(43,\)"):
        animator.generate(clip, np.zeros(40))
    with pytest.raises(ConditionError, match="Unknown speaking style"):
        animator.generate(clip, {"style": "Z999"})


def test_cancel_stops_the_job(loaded):
    animator = Animator(loaded, device="cpu", window=64, overlap=16)
    cancel = threading.Event()
    seen = []

    def progress(stage, fraction):
        seen.append(fraction)
        cancel.set()

    with pytest.raises(Cancelled):
        animator.generate(clip_from_samples(speech_like(20.0)), HAPPY, progress, cancel)
    assert len(seen) == 1


def test_cancel_stops_inside_an_audio_window(loaded):
    """A cancel that arrives while wav2vec2 runs stops it at the next layer, not at the end of
    the window; afterwards the engine works as before (no checks left behind)."""
    animator = Animator(loaded, device="cpu")
    audio = animator.backend.model.audio_model
    layers = [m for m in audio.modules() if next(m.children(), None) is None]
    cancel = threading.Event()
    ran = []
    watches = [layer.register_forward_hook(lambda m, *_: ran.append(m)) for layer in layers]
    trigger = layers[0].register_forward_hook(lambda *_: cancel.set())
    clip = clip_from_samples(speech_like(3.0))
    with pytest.raises(Cancelled):
        animator.generate(clip, HAPPY, cancel=cancel)
    trigger.remove()
    assert len(ran) == 1 and animator.stats["audio_encodes"] == 0
    ran.clear()
    for watch in watches:
        watch.remove()
    take = animator.generate(clip, HAPPY, cancel=threading.Event())
    fresh = Animator(loaded, device="cpu").generate(clip, HAPPY)
    np.testing.assert_array_equal(take.jaw, fresh.jaw)
    assert all(not layer._forward_pre_hooks for layer in layers)
