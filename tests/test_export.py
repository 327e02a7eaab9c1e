# SPDX-License-Identifier: GPL-3.0-or-later
"""Engine export: the Live Link Face CSV (layout, round trip, strict reader) and the
FLAME → ARKit-52 approximation on the demo head and a demo-model take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.demo.head import EXPRESSIONS, build_demo_head
from server.export.flame_arkit import (
    JAW_OPEN_REF,
    UNMEASURED,
    approximate_arkit,
    find_face_points,
    yaw_pitch_roll,
)
from server.export.livelink import (
    ARKIT_NAMES,
    BLENDSHAPE_COUNT,
    HEADER,
    LiveLinkError,
    read_livelink_csv,
    write_livelink_csv,
)
from server.living.rotations import euler_to_axis_angle
from tests.builders import ROOT, run_server

SENTENCE = ROOT / "server" / "demo" / "sentence.wav"
# The header as Live Link Face writes it, typed out once more so a change to the module fails.
DOCUMENTED_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,"
    "EyeLookUpLeft,EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,"
    "EyeLookOutRight,EyeLookUpRight,EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,"
    "JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,MouthSmileLeft,"
    "MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,"
    "MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,"
    "BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,"
    "RightEyePitch,RightEyeRoll"
)


def _random_take(frames: int = 130, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = {name: rng.uniform(-0.2, 1.2, frames) for name in ARKIT_NAMES}
    return weights, rng.normal(0, 0.2, (frames, 3)), rng.normal(0, 0.2, (frames, 2, 3))


# -- the CSV ---------------------------------------------------------------------------------

def test_header_is_the_documented_layout():
    assert ",".join(HEADER) == DOCUMENTED_HEADER
    assert len(HEADER) == 63 and BLENDSHAPE_COUNT == 61
    from server.retarget.arkit import ARKIT_52

    assert sorted(ARKIT_NAMES) == sorted(ARKIT_52)  # the same 52 names, Live Link's order


def test_csv_round_trip_gives_the_same_weights(tmp_path):
    weights, head, eyes = _random_take()
    written = write_livelink_csv(tmp_path / "take.csv", weights, 25, head=head, eyes=eyes,
                                 start_timecode="10:00:59:20")
    assert written.frames == 130
    assert any("clipped" in note for note in written.notes)
    lines = (tmp_path / "take.csv").read_text().splitlines()
    assert lines[0] == DOCUMENTED_HEADER and len(lines) == 131
    back = read_livelink_csv(tmp_path / "take.csv")
    for name in ARKIT_NAMES:
        np.testing.assert_allclose(back.weights[name], np.clip(weights[name], 0, 1), atol=1e-6)
    np.testing.assert_allclose(back.head, head, atol=1e-6)
    np.testing.assert_allclose(back.eyes, eyes, atol=1e-6)
    # Timecodes at 25 fps from 10:00:59:20: frame 5 is the next second's frame 0.
    assert back.fps == 25
    assert back.timecodes[0] == "10:00:59:20.000" and back.timecodes[5] == "10:01:00:00.000"
    assert back.timecodes[-1] == "10:01:04:24.000"
    np.testing.assert_allclose(np.diff(back.frames), 1.0)
    np.testing.assert_allclose(back.seconds, np.arange(130) / 25)
    # A row: the timecode, 61, then the coefficients in the header's columns.
    first = lines[1].split(",")
    assert first[1] == "61"
    column = HEADER.index("JawLeft")
    assert float(first[column]) == pytest.approx(np.clip(weights["jawLeft"][0], 0, 1), abs=1e-7)


def test_short_take_needs_its_frame_rate(tmp_path):
    weights = {"jawOpen": np.linspace(0, 1, 10)}
    write_livelink_csv(tmp_path / "short.csv", weights, 60)
    back = read_livelink_csv(tmp_path / "short.csv")
    assert back.fps is None  # ten frames within one second do not show the rate
    with pytest.raises(LiveLinkError, match="frame rate"):
        _ = back.seconds
    back = read_livelink_csv(tmp_path / "short.csv", fps=60)
    np.testing.assert_allclose(back.seconds, np.arange(10) / 60)
    np.testing.assert_allclose(back.weights["jawOpen"], weights["jawOpen"], atol=1e-6)
    assert not back.weights["mouthClose"].any() and not back.head.any()


@pytest.mark.parametrize("weights, fps, match", [
    ({"jawOpen": np.array([0.1, np.nan])}, 25, "non-finite"),
    ({"jawOpen": np.zeros(3), "JawOpen": np.zeros(3)}, 25, "Not ARKit blendshape names"),
    ({"jawOpen": np.zeros(3), "mouthClose": np.zeros(4)}, 25, "same length"),
    ({"jawOpen": np.zeros(3)}, 29.97, "whole number"),
    ({}, 25, "No ARKit weights"),
])
def test_writer_refuses_bad_input(tmp_path, weights, fps, match):
    with pytest.raises(LiveLinkError, match=match):
        write_livelink_csv(tmp_path / "bad.csv", weights, fps)
    assert not (tmp_path / "bad.csv").exists()


def test_writer_refuses_non_finite_angles_and_never_replaces_other_files(tmp_path):
    weights = {"jawOpen": np.zeros(4)}
    head = np.zeros((4, 3))
    head[2, 1] = np.inf
    with pytest.raises(LiveLinkError, match="head angles hold non-finite"):
        write_livelink_csv(tmp_path / "a.csv", weights, 25, head=head)
    notes = tmp_path / "notes.csv"
    notes.write_text("name,value\nmine,1\n")
    with pytest.raises(LiveLinkError, match="not a Live Link CSV"):
        write_livelink_csv(notes, weights, 25)
    assert notes.read_text() == "name,value\nmine,1\n"
    ours = write_livelink_csv(tmp_path / "ours.csv", weights, 25).path
    with pytest.raises(LiveLinkError, match="is the input"):
        write_livelink_csv(ours, weights, 25, inputs=[ours])
    write_livelink_csv(ours, {"jawOpen": np.ones(4)}, 25)  # a Live Link CSV is replaced
    assert read_livelink_csv(ours, fps=25).weights["jawOpen"].tolist() == [1.0] * 4
    with pytest.raises(LiveLinkError, match="must end in .csv"):
        write_livelink_csv(tmp_path / "a.txt", weights, 25)


def _malformed(lines: list[str]) -> dict[str, str]:
    header = lines[0]
    swapped = header.replace("JawRight,JawLeft", "JawLeft,JawRight")
    row = lines[1].split(",")
    return {
        "swapped columns": "\n".join([swapped] + lines[1:]),
        "missing column": "\n".join([header.rsplit(",", 1)[0]] + lines[1:]),
        "short row": "\n".join([header, ",".join(row[:-1])] + lines[2:]),
        "bad timecode": "\n".join([header, ",".join(["10:61:00:00.000"] + row[1:])]),
        "frame beyond the rate": "\n".join([header, ",".join(["00:00:00:25.000"] + row[1:])]),
        "count": "\n".join([header, ",".join(row[:1] + ["52"] + row[2:])]),
        "nan": "\n".join([header, ",".join(row[:5] + ["nan"] + row[6:])]),
        "word": "\n".join([header, ",".join(row[:5] + ["high"] + row[6:])]),
        "backwards": "\n".join([header, lines[2], lines[1]]),
        "header only": header,
        "empty": "",
    }


MALFORMED = {
    "swapped columns": "header column 18 is 'JawLeft', expected 'JawRight'",
    "missing column": "header has 62 columns",
    "short row": "line 2 has 62 fields",
    "bad timecode": "out of range",
    "frame beyond the rate": "out of range at 25 frames per second",
    "count": "BlendShapeCount is '52', expected 61",
    "nan": "non-finite",
    "word": "'high' is not a number",
    "backwards": "does not follow the previous line",
    "header only": "no frames",
    "empty": "is empty",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_reader_refuses_malformed_files(tmp_path, case):
    write_livelink_csv(tmp_path / "good.csv", {"jawOpen": np.linspace(0, 1, 3)}, 25)
    lines = (tmp_path / "good.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text(_malformed(lines)[case])
    with pytest.raises(LiveLinkError) as error:
        read_livelink_csv(bad, fps=25)
    assert MALFORMED[case] in str(error.value) and "bad.csv" in str(error.value)


def test_reader_accepts_the_other_count_spelling(tmp_path):
    path = write_livelink_csv(tmp_path / "a.csv", {"mouthClose": np.full(3, 0.25)}, 30).path
    path.write_text(path.read_text().replace("BlendShapeCount", "BlendshapeCount", 1))
    assert read_livelink_csv(path, fps=30).weights["mouthClose"].tolist() == [0.25] * 3


# -- the approximation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_flame():
    return build_demo_head().flame


@pytest.fixture(scope="module")
def demo_points(demo_flame):
    return find_face_points(demo_flame)


def test_angles_are_the_living_layers_yaw_pitch_roll():
    rng = np.random.default_rng(3)
    angles = rng.uniform(-0.6, 0.6, (50, 3))  # yaw, pitch, roll
    axis_angle = euler_to_axis_angle(angles[:, 1], angles[:, 0], angles[:, 2])
    np.testing.assert_allclose(yaw_pitch_roll(axis_angle), angles, atol=1e-9)


# Each named component of the demo head, at 1, and the ARKit coefficient it must drive most.
COMPONENT_TO_ARKIT = {
    "lip rounding": "mouthPucker", "lip spread": "mouthStretch",
    "upper lip raise": "mouthUpperUp", "lower lip depress": "mouthLowerDown",
    "mouth corners up": "mouthSmile", "mouth corners down": "mouthFrown",
    "cheek raise": "cheekSquint", "brow raise": "browOuterUp", "brow lower": "browDown",
    "brow inner up": "browInnerUp", "nose wrinkle": "noseSneer", "eye widen": "eyeWide",
    "eye squint": "eyeSquint", "left corner up": "mouthSmileLeft", "cheek puff": "cheekPuff",
    "mouth sideways": "mouthLeft", "blink": "eyeBlink",
}


def test_demo_components_drive_their_arkit_coefficients(demo_flame, demo_points):
    names = list(COMPONENT_TO_ARKIT)
    expression = np.zeros((len(names) + 1, 100))
    for row, name in enumerate(names):
        expression[row, EXPRESSIONS.index(name)] = 1.0
    result = approximate_arkit(demo_flame, expression, np.zeros((len(expression), 3)),
                               points=demo_points)
    assert set(result.weights) == set(ARKIT_NAMES) and result.unmeasured == UNMEASURED
    for row, name in enumerate(names):
        values = {arkit: float(w[row]) for arkit, w in result.weights.items()}
        expected = COMPONENT_TO_ARKIT[name]
        strongest = max(values, key=values.get)
        assert strongest.startswith(expected), (name, strongest, values[strongest])
        assert values[strongest] > 0.25, name
    # The rest face is all zeros, and what is not measured stays 0 throughout.
    assert all(w[-1] == pytest.approx(0, abs=1e-9) for w in result.weights.values())
    assert all(not result.weights[name].any() for name in UNMEASURED)


def test_sides_are_the_faces_own(demo_flame, demo_points):
    expression = np.zeros((1, 100))
    expression[0, EXPRESSIONS.index("left corner up")] = 1.0
    jaw = np.array([[0.0, 0.05, 0.0]])  # + about y: the chin moves to the subject's left
    eyes = np.zeros((1, 2, 3))
    eyes[0, :, 1] = np.radians(15)  # both eyes turn toward the subject's left
    result = approximate_arkit(demo_flame, expression, jaw, eyes=eyes, points=demo_points)
    w = {name: float(v[0]) for name, v in result.weights.items()}
    assert w["mouthSmileLeft"] > 3 * w["mouthSmileRight"]
    assert w["jawLeft"] == pytest.approx(0.5) and w["jawRight"] == 0
    assert w["eyeLookOutLeft"] == pytest.approx(0.5) and w["eyeLookInRight"] == pytest.approx(0.5)
    assert w["eyeLookInLeft"] == 0 and w["eyeLookOutRight"] == 0


@pytest.fixture(scope="module")
def demo_take(demo_flame):
    """The demo model's Neutral take of the demo sentence, its living layers (seed 0) and the
    lip closure the CLI applies."""
    from server.animator import Animator
    from server.audio import load_audio
    from server.backends import choose
    from server.checkpoints import read_model
    from server.living import emotion_weights, living_layers
    from server.living.closure import close_lips, closure_weights, lip_closure

    animator = Animator(read_model(None, None), device="cpu", backend=choose("auto", "cpu"),
                        threads=1)
    clip = load_audio(SENTENCE, None, None, False)
    take = animator.generate(clip, {"emotion": "Neutral", "intensity": 2, "style": 0})
    layers = living_layers(clip.samples, take.frames,
                           emotion_weights(take.condition, list(animator.loaded.config.emotions)),
                           seed=0)
    expression = take.expression[:, :demo_flame.n_expression]
    weights = closure_weights(clip.samples, take.frames)
    closed_expression, closed_jaw = close_lips(expression, take.jaw, weights,
                                               lip_closure(demo_flame))
    phones = json.loads(SENTENCE.with_suffix(".json").read_text())["phones"]
    centres = (np.arange(take.frames) + 0.5) / take.fps
    label = np.array([next((p for p, start, end in phones if start <= t < end), "")
                      for t in centres])
    return dict(expression=expression, jaw=take.jaw, closed_expression=closed_expression,
                closed_jaw=closed_jaw, layers=layers, label=label)


def test_demo_take_jaw_blinks_and_lip_closure(demo_flame, demo_points, demo_take):
    layers = demo_take["layers"]
    result = approximate_arkit(demo_flame, demo_take["closed_expression"],
                               demo_take["closed_jaw"], eyelids=layers.eyelids,
                               eyes=layers.eyes, neck=layers.neck, model_jaw=demo_take["jaw"],
                               points=demo_points)
    w = result.weights
    assert np.corrcoef(w["jawOpen"], demo_take["jaw"][:, 0])[0, 1] > 0.99
    # Blinks: the eyelids layer, on both eyes.
    assert np.corrcoef(w["eyeBlinkLeft"], layers.eyelids)[0, 1] > 0.99
    np.testing.assert_allclose(w["eyeBlinkRight"], w["eyeBlinkLeft"], atol=1e-9)
    assert w["eyeBlinkLeft"].max() > 0.9
    # Lips shut at p, b and m: mouthClose seals the model's jaw there, not on open vowels.
    label = demo_take["label"]
    sealed = w["mouthClose"] / np.maximum(w["jawOpen"], 1e-9)
    bilabial = np.isin(label, ["p", "b", "m"]) & (w["jawOpen"] > 0.02)
    vowels = np.isin(label, ["aa", "ae", "ah", "ao", "ay", "eh", "ey", "iy"])
    assert bilabial.sum() >= 8 and vowels.sum() >= 30
    assert np.median(sealed[bilabial]) > 0.8
    assert np.median(sealed[vowels]) < 0.2
    np.testing.assert_allclose(result.head, yaw_pitch_roll(layers.neck))
    assert np.abs(result.head).max() > np.radians(1)
    # Without the lip-closure layer the demo model never seals its lips: mouthClose stays ~0.
    raw = approximate_arkit(demo_flame, demo_take["expression"], demo_take["jaw"],
                            points=demo_points)
    assert raw.weights["mouthClose"].max() < 0.02
    assert not raw.weights["eyeBlinkLeft"].any() and raw.head is None


def test_cli_writes_the_take_and_its_live_link_csv(tmp_path):
    take_path, csv_path = tmp_path / "take.npz", tmp_path / "take.csv"
    result = run_server("generate", SENTENCE, "--seed", "0", "-o", take_path,
                        "--arkit-csv", csv_path)
    assert result.returncode == 0, result.stderr
    assert str(csv_path) in result.stdout
    take = np.load(take_path)
    back = read_livelink_csv(csv_path, fps=25)
    frames = len(take["jaw"])
    assert len(back.timecodes) == frames and back.timecodes[-1] == \
        f"00:00:{(frames - 1) // 25:02d}:{(frames - 1) % 25:02d}.000"
    # jawOpen is the take's jaw where the lips were not shut, the model's (wider) jaw where
    # the lip-closure layer closed it.
    jaw_open = np.clip(take["jaw"][:, 0] / JAW_OPEN_REF, 0, 1)
    untouched = take["closure"] == 0
    assert untouched.sum() > frames / 3
    np.testing.assert_allclose(back.weights["jawOpen"][untouched], jaw_open[untouched],
                               atol=1e-6)
    assert np.all(back.weights["jawOpen"] >= jaw_open - 1e-6)
    np.testing.assert_allclose(back.head, yaw_pitch_roll(take["neck"]), atol=1e-6)
    np.testing.assert_allclose(back.eyes, yaw_pitch_roll(take["eyes"]), atol=1e-6)
    assert np.corrcoef(back.weights["eyeBlinkLeft"], take["eyelids"])[0, 1] > 0.99
    closed = take["closure"] > 0.9
    assert closed.any()
    assert back.weights["mouthClose"][closed].mean() > 0.05


def test_cli_refuses_a_csv_that_is_an_input(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    result = run_server("generate", SENTENCE, "-o", tmp_path / "take.npz", "--arkit-csv", notes)
    assert result.returncode == 2
    assert "not a Live Link CSV" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "take.npz").exists() and notes.read_text() == "a,b\n1,2\n"


def test_landmark_head_poses_the_landmarks_exactly(demo_flame, demo_points):
    from server.export.flame_arkit import landmark_head
    from server.flame import flame_vertices

    rng = np.random.default_rng(5)
    expression, jaw = rng.normal(0, 1, (6, 100)), rng.normal(0, 0.1, (6, 3))
    small, local = landmark_head(demo_flame, demo_points)
    assert small.n_vertices < demo_flame.n_vertices / 20
    full = flame_vertices(demo_flame, expression, jaw)
    part = flame_vertices(small, expression, jaw)
    np.testing.assert_allclose(part[:, local.upper_lip], full[:, demo_points.upper_lip],
                               atol=1e-12)
    np.testing.assert_allclose(part[:, local.lids.lower], full[:, demo_points.lids.lower],
                               atol=1e-12)
    np.testing.assert_allclose(part[:, local.puff], full[:, demo_points.puff], atol=1e-12)


@pytest.mark.parametrize("with_flame, message", [
    (False, "none is known for this model: give --flame FILE"),
    (True, "--arkit-csv: the FLAME file: No inner-lip vertices were found"),
])
def test_cli_without_usable_geometry_is_one_sentence(tmp_path, tiny_bundle, speech_wav,
                                                     flame_files, with_flame, message):
    flame = ["--flame", flame_files["clean"]] if with_flame else []
    result = run_server("generate", speech_wav, "--model", tiny_bundle, *flame,
                        "-o", tmp_path / "take.npz", "--arkit-csv", tmp_path / "take.csv")
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "take.npz").exists() and not (tmp_path / "take.csv").exists()


def test_cli_batch_writes_one_csv_per_take(tmp_path):
    result = run_server("generate", SENTENCE, "--emotion", "all", "-o", f"{tmp_path}/takes/",
                        "--arkit-csv", tmp_path / "csv")
    assert result.returncode == 0, result.stderr
    takes = sorted((tmp_path / "takes").glob("*.npz"))
    assert len(takes) == 8 and "Live Link CSVs" in result.stdout
    for take in takes:
        back = read_livelink_csv(tmp_path / "csv" / f"{take.stem}.csv", fps=25)
        assert len(back.timecodes) == len(np.load(take)["jaw"])


# -- through a character mapping -----------------------------------------------------------

@pytest.fixture(scope="module")
def mappings(tmp_path_factory, demo_flame):
    """Character mappings set up on the demo head: an ARKit character (52 keys and a jaw
    bone), a viseme character (no ARKit keys), and the ARKit one claiming another head."""
    from server.retarget import setup_character
    from tests.characters import arkit_character, viseme_character

    folder = tmp_path_factory.mktemp("mappings")
    arkit = setup_character(arkit_character().geometry, demo_flame)
    (folder / "arkit.json").write_text(arkit.to_json())
    (folder / "visemes.json").write_text(
        setup_character(viseme_character().geometry, demo_flame).to_json())
    other = json.loads(arkit.to_json())
    other["flame_vertex_count"] = demo_flame.n_vertices + 100
    (folder / "other.json").write_text(json.dumps(other))
    return folder, arkit


def test_cli_character_mapping_gives_its_arkit_keys(tmp_path, demo_flame, mappings):
    from server.retarget import retarget

    folder, mapping = mappings
    take_path, csv_path = tmp_path / "take.npz", tmp_path / "take.csv"
    result = run_server("generate", SENTENCE, "--seed", "0", "-o", take_path,
                        "--arkit-csv", csv_path, "--character", folder / "arkit.json")
    assert result.returncode == 0, result.stderr
    assert "52 ARKit keys through its mapping" in result.stdout
    take = np.load(take_path)
    back = read_livelink_csv(csv_path, fps=25)
    solved = retarget(mapping, demo_flame, take["expression"][:, :demo_flame.n_expression],
                      take["jaw"], closure=take["closure"])
    column = mapping.key_names.index(mapping.arkit["mouthSmileLeft"])
    np.testing.assert_allclose(back.weights["mouthSmileLeft"],
                               np.clip(solved.weights[:, column], 0, 1), atol=1e-5)
    assert back.weights["mouthSmileLeft"].max() > 0.1
    # The jaw rides on the character's jaw bone: jawOpen carries it.
    assert solved.jaw is not None
    assert np.corrcoef(back.weights["jawOpen"], take["jaw"][:, 0])[0, 1] > 0.95
    # Blinks and gaze are the take's layers.
    assert np.corrcoef(back.weights["eyeBlinkLeft"], take["eyelids"])[0, 1] > 0.99
    np.testing.assert_allclose(back.eyes, yaw_pitch_roll(take["eyes"]), atol=1e-6)
    np.testing.assert_allclose(back.head, yaw_pitch_roll(take["neck"]), atol=1e-6)


@pytest.mark.parametrize("name, message", [
    ("visemes.json", "none of them ARKit blendshapes"),
    ("other.json", "was set up with a FLAME head of"),
    ("missing.json", "does not exist"),
])
def test_cli_refuses_a_mapping_it_cannot_use(tmp_path, mappings, name, message):
    folder, _ = mappings
    result = run_server("generate", SENTENCE, "-o", tmp_path / "take.npz",
                        "--arkit-csv", tmp_path / "take.csv", "--character", folder / name)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "take.npz").exists() and not (tmp_path / "take.csv").exists()


@pytest.mark.parametrize("kind, message", [
    ("device", "is not a file"), ("folder", "is not a file"), ("huge", "larger than 64 MB")])
def test_cli_reads_no_more_of_a_mapping_than_one_can_be(tmp_path, kind, message):
    """/dev/zero, a folder and a 65 MB file are one sentence each, not a process killed for
    memory."""
    if kind == "device":
        mapping = Path("/dev/zero")
    elif kind == "folder":
        mapping = tmp_path
    else:
        mapping = tmp_path / "huge.json"
        with open(mapping, "wb") as f:
            f.truncate(65 * 2**20)
    result = run_server("generate", SENTENCE, "-o", tmp_path / "take.npz",
                        "--arkit-csv", tmp_path / "take.csv", "--character", mapping,
                        timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "take.npz").exists() and not (tmp_path / "take.csv").exists()


def test_cli_character_needs_the_csv(tmp_path, mappings):
    folder, _ = mappings
    result = run_server("generate", SENTENCE, "-o", tmp_path / "take.npz",
                        "--character", folder / "arkit.json")
    assert result.returncode == 2 and "give --arkit-csv OUT.csv too" in result.stderr
