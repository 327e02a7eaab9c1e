# SPDX-License-Identifier: GPL-3.0-or-later
"""The living layers: blinks, eyelid direction, gaze, head motion, and the take fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from server.demo.head import build_demo_head
from server.flame import SHAPE_SPACE_DIM, axis_angle_to_matrix
from server.living import (
    blink_track,
    eyelid_direction,
    gaze_track,
    head_motion,
    living_layers,
    seed_from_hash,
    speech_activity,
)
from server.living.gaze import MIN_JERK_PEAK, saccade_duration
from server.living.head import LIMITS_DEG, nod_onset_correlation
from tests.builders import ROOT, run_server, speech_like, synthetic_flame

FRAMES = 1500  # 60 s at 25 fps
SEEDS = range(8)


@pytest.fixture(scope="module")
def sentence_60s() -> np.ndarray:
    """The demo sentence (16 kHz, with its pauses) repeated to 60 s."""
    samples, rate = soundfile.read(str(ROOT / "server/demo/sentence.wav"), dtype="float32")
    assert rate == 16_000
    return np.tile(samples, int(np.ceil(60 * rate / len(samples))))[: 60 * rate]


@pytest.fixture(scope="module")
def activity(sentence_60s):
    return speech_activity(sentence_60s, FRAMES)


def _constant(name: str) -> dict[str, np.ndarray]:
    return {name: np.ones(FRAMES)}


def test_speech_activity_finds_speech_pauses_and_stresses(activity):
    assert 0.6 < activity.speaking.mean() < 0.95
    assert len(activity.phrase_ends) >= 10  # the sentence's pauses, eleven repeats
    assert 1 < len(activity.stresses) / 60 < 4  # stresses per second (syllables: 4-5/s)
    voiced = activity.pitch[activity.pitch > 0]
    assert 80 < np.median(voiced) < 300


def test_blink_rate_duration_and_doublets_follow_the_model(activity):
    tracks = [blink_track(activity, seed=s) for s in SEEDS]
    rates = np.array([t.rate_per_minute() for t in tracks])
    assert 17 <= rates.mean() <= 26, rates  # 17/min at rest, 26/min speaking
    assert rates.min() >= 12 and rates.max() <= 38  # one minute: a count with Poisson-like noise
    events = [e for t in tracks for e in t.events]
    durations = np.array([e.seconds for e in events])
    assert durations.min() >= 0.12 and durations.max() <= 0.44  # 120-400 ms (+ frame rounding)
    assert 0.2 <= np.median(durations) <= 0.28  # median 230 ms
    assert all(e.peak - e.start < e.end - e.peak for e in events)  # closes faster than opens
    doubles = sum(e.double for e in events) / len(events)
    assert 0.03 <= doubles <= 0.12, doubles  # 7 % doublets
    for t in tracks:
        assert t.closure.min() >= 0 and t.closure.max() <= 1
        assert all(t.closure[e.peak] == 1.0 for e in t.events if e.peak < FRAMES)
    # Blinks cluster after phrase ends: the 400 ms after each hold more blinks than their share.
    after = np.zeros(FRAMES, bool)
    for end in activity.phrase_ends:
        after[end: end + 10] = True
    starts = np.array([e.start for e in events if e.start < FRAMES])
    assert after[starts].mean() > 1.5 * after.mean()
    again = blink_track(activity, seed=3)
    np.testing.assert_array_equal(again.closure, tracks[3].closure)
    assert not np.array_equal(tracks[0].closure, tracks[1].closure)


def test_emotions_shift_blinks_as_stated(activity):
    def mean_rate(emotions=None) -> float:
        return np.mean([blink_track(activity, emotions, s).rate_per_minute() for s in SEEDS])

    neutral = mean_rate()
    assert 0.4 <= mean_rate(_constant("Surprise")) / neutral <= 0.75  # 0.55×
    assert 0.55 <= mean_rate(_constant("Fear")) / neutral <= 0.85  # 0.7×
    surprise = blink_track(activity, _constant("Surprise"), 0)
    assert surprise.widen.min() == pytest.approx(0.6)
    sad = [blink_track(activity, _constant("Sad"), s) for s in SEEDS]
    sad_durations = np.median([e.seconds for t in sad for e in t.events])
    calm = np.median([e.seconds for s in SEEDS for e in blink_track(activity, seed=s).events])
    assert sad_durations >= 1.2 * calm  # 1.35× longer
    assert sad[0].closure.min() == pytest.approx(0.15)  # heavier lids at rest
    amount = blink_track(activity, seed=0, amount=0.5)
    assert amount.closure.max() == pytest.approx(0.5)
    assert blink_track(activity, seed=0, rate=0).events == []


def _closed(flame, expression: np.ndarray) -> np.ndarray:
    basis = flame.shapedirs[:, :, SHAPE_SPACE_DIM:]
    return flame.v_template + np.einsum("vce,e->vc", basis[:, :, : len(expression)], expression)


def _gap(v: np.ndarray, lids) -> float:
    return float(np.linalg.norm(v[lids.upper] - v[lids.lower], axis=1).mean())


def test_eyelid_direction_closes_the_demo_head_without_moving_the_mouth():
    head = build_demo_head()
    direction = eyelid_direction(head.flame)
    lids = direction.lids
    assert len(lids.upper) >= 8 and set(lids.upper).isdisjoint(lids.lower)
    closed = _closed(head.flame, direction.at(np.ones(1))[0])
    rest = head.flame.v_template
    assert _gap(closed, lids) < 0.1 * _gap(rest, lids)
    for part in ("lips", "lower_face"):
        moved = np.linalg.norm(closed[head.groups[part]] - rest[head.groups[part]], axis=1)
        assert moved.max() < 1e-4  # 0.1 mm
    assert direction.closed_gap < 0.1 * direction.open_gap


def test_a_blink_closes_the_lids_from_whatever_the_expression_did_to_them():
    """A squint or wide eyes from the model: the blink still makes the lids meet (without the
    correction it overshoots or stops short by the expression's own lid motion)."""
    from server.demo.head import EXPRESSIONS

    head = build_demo_head()
    direction = eyelid_direction(head.flame)
    rest = head.flame.v_template
    for name, amount in (("eye squint", 1.0), ("eye widen", 1.5), ("cheek raise", 1.0)):
        expression = np.zeros((1, head.flame.n_expression))
        expression[0, EXPRESSIONS.index(name)] = amount
        moved = _closed(head.flame, expression[0])
        assert abs(_gap(moved, direction.lids) - _gap(rest, direction.lids)) > 5e-4, name
        closed = _closed(head.flame, expression[0] + direction.at(np.ones(1), expression)[0])
        assert _gap(closed, direction.lids) < 0.1 * _gap(rest, direction.lids), name
        uncorrected = _closed(head.flame, expression[0] + direction.at(np.ones(1))[0])
        assert _gap(uncorrected, direction.lids) > _gap(closed, direction.lids), name
        mouth = head.groups["lips"]
        assert np.linalg.norm(closed[mouth] - moved[mouth], axis=1).max() < 1e-4, name


def test_eyelid_direction_on_a_synthetic_flame_file():
    """The synthetic file's random basis cannot close its lids: every column moves the mouth
    (hundreds of mouth coordinates against 100 coefficients), and the direction says so instead
    of moving the mouth. With half the columns still on the mouth (random elsewhere, as FLAME's
    components are semi-local), least squares finds a closing direction among them."""
    flame = synthetic_flame()
    plain = eyelid_direction(flame)
    assert plain.mouth_motion < 1e-4 and plain.closed_gap > 0.5 * plain.open_gap

    local = synthetic_flame()
    mouth = local.v_template[:, 1] < 0.0  # everything skinned to the jaw in this file
    local.shapedirs[mouth, :, SHAPE_SPACE_DIM + 50:] = 0.0
    direction = eyelid_direction(local)
    closed = _closed(local, direction.expression)
    assert _gap(closed, direction.lids) < 0.1 * _gap(local.v_template, direction.lids)
    moved = np.linalg.norm(closed[mouth] - local.v_template[mouth], axis=1)
    assert moved.max() < 1e-4


def _gaze_angles(eyes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees) of +z rotated by the eye joints' axis-angle rotations."""
    forward = axis_angle_to_matrix(eyes)[..., :, 2]
    yaw = np.degrees(np.arctan2(forward[..., 0], forward[..., 2]))
    pitch = np.degrees(np.arcsin(np.clip(forward[..., 1], -1, 1)))
    return yaw, pitch


def test_saccades_follow_the_main_sequence_and_stay_in_range(activity):
    tracks = [gaze_track(activity, seed=s) for s in SEEDS[:4]]
    saccades = [m for t in tracks for m in t.saccades]
    amplitudes = np.array([m.amplitude for m in saccades])
    assert 3 <= np.median(amplitudes) <= 10
    assert (amplitudes < 15).mean() >= 0.85  # most saccades under 15 degrees
    for m in saccades:
        assert m.duration == pytest.approx(max(0.0022 * m.amplitude + 0.021,
                                               MIN_JERK_PEAK * m.amplitude / 500))
        assert m.peak_velocity <= 500 + 1e-9
    assert saccade_duration(10) == pytest.approx(0.043)
    fixations = np.concatenate([t.fixations for t in tracks])
    assert 0.3 <= np.median(fixations) <= 0.5  # median 380 ms
    assert np.percentile(fixations, 10) >= 0.15 and 0.55 <= np.percentile(fixations, 90) <= 1.2
    for t in tracks:
        assert t.eyes.shape == (FRAMES, 2, 3)
        np.testing.assert_array_equal(t.eyes[:, 0], t.eyes[:, 1])  # both eyes together
        yaw, pitch = _gaze_angles(t.eyes[:, 0])
        np.testing.assert_allclose(yaw, t.yaw, atol=1e-6)
        np.testing.assert_allclose(pitch, t.pitch, atol=1e-6)
        assert np.abs(yaw).max() <= 30 + 1e-6 and -25 - 1e-6 <= pitch.min()
        assert pitch.max() <= 20 + 1e-6
    # Gaze averts more while speaking than in pauses.
    away = np.concatenate([np.hypot(t.yaw, t.pitch) > 4.5 for t in tracks])
    speaking = np.tile(activity.speaking, len(tracks))
    assert away[speaking].mean() > 1.5 * away[~speaking].mean()


def test_gaze_target_limits_and_lid_follow(activity):
    side = gaze_track(activity, seed=0, target=np.array([np.sin(0.9), -0.5, np.cos(0.9)]),
                      aversion=0.0)
    assert side.yaw.max() <= 30 + 1e-9 and side.yaw.mean() > 26  # clamped at the 30° limit
    assert side.pitch.min() >= -25 - 1e-9
    assert side.lid_follow.mean() > 0.25  # looking down lowers the upper lids
    ahead = gaze_track(activity, seed=0, aversion=0.0)
    assert np.hypot(ahead.yaw, ahead.pitch).max() <= 3 + 1e-9  # only face scanning
    up = gaze_track(activity, seed=0, target=np.array([0, 0.5, 1.0]), aversion=0.0)
    assert up.lid_follow.max() == 0.0


def test_head_motion_limits_correlation_posture_and_off(activity):
    motion = head_motion(activity, seed=0)
    assert motion.neck.shape == (FRAMES, 3)
    assert np.all(np.abs(motion.angles) <= LIMITS_DEG + 1e-9)
    assert np.degrees(np.linalg.norm(motion.neck, axis=1)).max() <= 27  # √(15²+20²+10²)
    assert nod_onset_correlation(motion, activity) >= 0.25
    steady = speech_activity(speech_like(60), FRAMES)
    assert nod_onset_correlation(head_motion(steady, seed=0), steady) >= 0.6
    off = head_motion(activity, _constant("Sad"), seed=0, strength=0.0)
    assert not off.neck.any() and not off.angles.any()
    sad = head_motion(activity, _constant("Sad"), seed=0)
    surprise = head_motion(activity, _constant("Surprise"), seed=0)
    assert sad.angles[:, 0].mean() - motion.angles[:, 0].mean() == pytest.approx(6, abs=0.5)
    assert surprise.angles[:, 0].mean() - motion.angles[:, 0].mean() == pytest.approx(-5, abs=0.5)
    np.testing.assert_array_equal(head_motion(activity, seed=0).neck, motion.neck)


def test_living_layers_are_the_take_fields(sentence_60s):
    layers = living_layers(sentence_60s, FRAMES, seed=seed_from_hash("00ff" * 8))
    fields = layers.fields()
    assert fields["eyes"].shape == (FRAMES, 2, 3) and fields["neck"].shape == (FRAMES, 3)
    assert fields["eyelids"].shape == (FRAMES,)
    assert 0 <= fields["eyelids"].min() and fields["eyelids"].max() <= 1
    assert np.all(fields["eyelids"] >= layers.blinks.closure)
    again = living_layers(sentence_60s, FRAMES, seed=seed_from_hash("00ff" * 8))
    for name, values in fields.items():
        np.testing.assert_array_equal(values, again.fields()[name])


def test_generate_writes_the_living_fields_and_no_extras_leaves_them_out(
        tmp_path, tiny_bundle, speech_wav):
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "-o", out)
    assert result.returncode == 0, result.stderr
    take = np.load(out)
    frames = take["expression"].shape[0]
    assert take["eyes"].shape == (frames, 2, 3) and take["neck"].shape == (frames, 3)
    assert take["eyelids"].shape == (frames,)
    plain = tmp_path / "plain.json"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--no-extras",
                        "--seed", "3", "-o", plain)
    assert result.returncode == 0, result.stderr
    written = json.loads(plain.read_text())
    assert {"eyes", "neck", "eyelids"}.isdisjoint(written)
    assert {"expression", "jaw", "fps", "condition", "label"} <= set(written)


def test_stored_speech_activity_round_trips_and_refuses_what_does_not_fit(sentence_60s):
    from server.living import layers_from_activity
    from server.living.speech import SpeechActivity

    activity = speech_activity(sentence_60s, FRAMES)
    data = json.loads(json.dumps(activity.to_dict()))
    again = SpeechActivity.from_dict(data)
    assert again.frames == FRAMES and again.pauses == activity.pauses
    np.testing.assert_array_equal(again.speaking, activity.speaking)
    np.testing.assert_array_equal(again.stresses, activity.stresses)
    a = layers_from_activity(activity, seed=7)
    b = layers_from_activity(again, seed=7)
    assert np.abs(a.eyelids - b.eyelids).max() < 1e-3 and np.abs(a.neck - b.neck).max() < 1e-4
    for broken, message in [({**data, "pitch": data["pitch"][:-1]}, "'pitch'"),
                            ({**data, "stresses": [FRAMES + 5]}, "'stresses'"),
                            ({**data, "energy": ["x"] * FRAMES}, "not a number"),
                            ({k: v for k, v in data.items() if k != "pauses"}, "'pauses'"),
                            ([], "not a mapping")]:
        with pytest.raises(ValueError, match=message):
            SpeechActivity.from_dict(broken)
