# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m server`` as a user runs it: a real subprocess, real files."""

import json
import os

import numpy as np
import pytest
import soundfile

from tests.builders import run_server, write_official_release, write_wav


def test_help_lists_the_commands():
    result = run_server("--help")
    assert result.returncode == 0
    for command in ("generate", "info", "worker"):
        assert command in result.stdout
    assert "--emotion" in run_server("generate", "--help").stdout


def test_generate_writes_npz_and_json(tmp_path, tiny_bundle, speech_wav):
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--emotion", "Happy",
                 "--intensity", "strong", "--style", "M005", "-o", out)
    assert result.returncode == 0, result.stderr
    take = np.load(out)
    samples = len(soundfile.read(str(speech_wav))[0])
    frames = samples // 640
    assert take["expression"].shape == (frames, 100) and take["jaw"].shape == (frames, 3)
    assert int(take["fps"]) == 25
    assert take["condition"].shape == (frames, 43)
    assert take["condition"][0, 1] == 1 and take["condition"][0, 10] == 1
    assert take["condition"][0, 12] == 1
    as_json = tmp_path / "take.json"
    assert run_server("generate", speech_wav, "--model", tiny_bundle, "--emotion", "Happy",
               "--intensity", "2", "--style", "1", "-o", as_json).returncode == 0
    data = json.loads(as_json.read_text())
    np.testing.assert_allclose(np.array(data["expression"]), take["expression"], atol=1e-7)
    assert data["fps"] == 25


def test_generate_with_flame_adds_vertices(tmp_path, tiny_bundle, speech_wav, flame_files):
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--flame",
                 flame_files["legacy"], "--emotion", "Sad", "-o", out)
    assert result.returncode == 0, result.stderr
    take = np.load(out)
    assert take["vertices"].shape == (take["expression"].shape[0], 300, 3)
    assert take["faces"].shape[1] == 3


def test_condition_file_and_trim(tmp_path, tiny_bundle, speech_wav):
    vector = np.zeros(43, np.float32)
    vector[[6, 10, 11]] = 1  # Anger, strong, M003
    np.save(tmp_path / "anger.npy", vector)
    by_file = tmp_path / "a.npz"
    by_name = tmp_path / "b.npz"
    assert run_server("generate", speech_wav, "--model", tiny_bundle, "--condition",
               tmp_path / "anger.npy", "--start", "0.5", "--end", "2.5", "-o",
               by_file).returncode == 0
    assert run_server("generate", speech_wav, "--model", tiny_bundle, "--emotion", "Anger",
               "--start", "0.5", "--end", "2.5", "-o", by_name).returncode == 0
    a, b = np.load(by_file), np.load(by_name)
    assert a["expression"].shape == (50, 100)
    np.testing.assert_array_equal(a["expression"], b["expression"])


def test_batch_over_files_and_all_emotions(tmp_path, tiny_bundle):
    folder = tmp_path / "lines"
    folder.mkdir()
    write_wav(folder / "one.wav", 1.0, seed=1)
    write_wav(folder / "two.wav", 1.2, seed=2)
    out = tmp_path / "takes"
    result = run_server("generate", folder, "--model", tiny_bundle, "--emotion", "all", "-o", out)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 16 and "one_Happy.npz" in names and "two_Contempt.npz" in names
    assert "wrote 16 of 16 takes" in result.stdout
    happy, sad = np.load(out / "one_Happy.npz"), np.load(out / "one_Sad.npz")
    assert np.abs(happy["expression"] - sad["expression"]).max() > 1e-4


def test_info_describes_the_official_model(tmp_path):
    emote, _ = write_official_release(tmp_path)
    result = run_server("info", "--model", emote, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["kind"] == "official" and len(info["styles"]) == 32
    assert info["flint"].endswith("loss_total=0.0123.ckpt")
    text = run_server("info", "--model", emote).stdout
    assert "Anger" in text and "FLINT:" in text


def _bad_inputs(tmp_path, tiny_bundle, speech_wav, flame_files):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "bytes.wav").write_bytes(os.urandom(4000))
    soundfile.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), 16_000)
    write_wav(tmp_path / "short.wav", 0.1)
    not_flame = tmp_path / "smpl.pkl"
    import pickle

    with open(not_flame, "wb") as f:
        pickle.dump({"v_template": np.zeros((10, 3)), "f": np.zeros((1, 3), int),
                     "shapedirs": np.zeros((10, 3, 10)), "posedirs": np.zeros((10, 3, 207)),
                     "J_regressor": np.zeros((24, 10)), "weights": np.zeros((10, 24)),
                     "kintree_table": np.zeros((2, 24), int)}, f)
    (tmp_path / "not_a_model").mkdir()
    model = ["--model", tiny_bundle]
    return {
        "missing file": ([tmp_path / "nope.wav", *model], "Audio file not found"),
        "empty file": ([tmp_path / "empty.wav", *model], "is empty"),
        "non-audio bytes": ([tmp_path / "bytes.wav", *model], "not an audio file"),
        "zero-length audio": ([tmp_path / "zero.wav", *model], "no audio samples"),
        "0.1 s audio": ([tmp_path / "short.wav", *model], "at least 0.32 s"),
        "wrong model folder": ([speech_wav, "--model", tmp_path / "not_a_model"],
                               "is not an EMOTE model folder"),
        "FLAME of another kind": ([speech_wav, *model, "--flame", not_flame],
                                  "is not a FLAME model: it has 24 joints"),
        "unknown emotion": ([speech_wav, *model, "--emotion", "Joy"], "Unknown emotion 'Joy'"),
        "8 kHz stereo mp3": ([write_wav(tmp_path / "phone.mp3", 2.0, rate=8_000, channels=2,
                                        fmt="MP3"), *model], "sampled at 8000 Hz"),
    }


def test_bad_input_gives_one_sentence_and_writes_nothing(tmp_path, tiny_bundle, speech_wav,
                                                         flame_files):
    for name, (args, message) in _bad_inputs(tmp_path, tiny_bundle, speech_wav,
                                              flame_files).items():
        out = tmp_path / "out" / f"{name}.npz"
        result = run_server("generate", *args, "-o", out)
        assert result.returncode != 0, name
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr
        assert not out.exists() and not (tmp_path / "out").exists(), name


def test_8k_stereo_mp3_generates_when_allowed(tmp_path, tiny_bundle):
    mp3 = write_wav(tmp_path / "phone.mp3", 2.0, rate=8_000, channels=2, fmt="MP3")
    out = tmp_path / "phone.npz"
    result = run_server("generate", mp3, "--model", tiny_bundle, "--allow-low-rate", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "8000 Hz" in result.stderr
    assert np.load(out)["expression"].shape[0] in (49, 50, 51)


def _one_error(result, message):
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("threads", ["100000", "-1", "0"])
def test_threads_outside_the_machine_are_refused(tiny_bundle, threads):
    result = run_server("info", "--model", tiny_bundle, "--threads", threads)
    _one_error(result, f"--threads must be a whole number from 1 to {os.cpu_count() * 4}")
    assert result.returncode == 2


@pytest.mark.parametrize("bounds", [("--start", "nan"), ("--end", "nan"),
                                    ("--start", "1", "--end", "nan")])
def test_a_nan_range_is_one_sentence(tmp_path, tiny_bundle, speech_wav, bounds):
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, *bounds, "-o", out)
    _one_error(result, "of the audio range is NaN; give it in seconds")
    assert not out.exists()


@pytest.mark.parametrize("emotion", ["Happy=0.5,Happy=0.5", "Happy=1,happy=1",
                                     "Happy=0.5,1=0.5"])
def test_a_mixture_that_names_an_emotion_twice_is_refused(tmp_path, tiny_bundle, speech_wav,
                                                          emotion):
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--emotion", emotion,
                        "-o", out)
    _one_error(result, "given twice")
    assert not out.exists()


def test_a_condition_file_of_random_bytes_is_not_a_npy_file(tmp_path, tiny_bundle, speech_wav):
    noise = tmp_path / "noise.npy"
    noise.write_bytes(np.random.default_rng(1).bytes(2048))
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--condition", noise,
                        "-o", out)
    _one_error(result, "is not a .npy file")
    assert not out.exists()


# -- lip closure (--lip-closure) ------------------------------------------------------------------

def test_lip_closure_shuts_the_demo_heads_lips_at_p_b_m(tmp_path):
    """The built-in demo model on the shipped held-out sentence: the take holds ``closure`` and
    its lips are shut at the p, b and m the detector found; --lip-closure 0 is the raw take."""
    from server.demo.head import build_demo_head
    from server.flame import flame_vertices
    from tests.builders import ROOT

    sentence = ROOT / "server" / "demo" / "sentence.wav"
    shut, raw = tmp_path / "shut.npz", tmp_path / "raw.npz"
    result = run_server("generate", sentence, "--seed", "1", "-o", shut)
    assert result.returncode == 0, result.stderr
    assert "not shut" not in result.stderr
    assert run_server("generate", sentence, "--seed", "1", "--lip-closure", "0",
                      "-o", raw).returncode == 0
    shut, raw = np.load(shut), np.load(raw)
    assert "closure" not in raw.files
    closure = shut["closure"]
    assert closure.shape == (shut["expression"].shape[0],)
    np.testing.assert_array_equal(shut["eyelids"], raw["eyelids"])  # the other layers stay
    head = build_demo_head()
    upper, lower = head.groups["upper_lip_line"], head.groups["lower_lip_line"]

    def gap(take, frames):
        vertices = flame_vertices(head.flame, take["expression"][frames], take["jaw"][frames])
        return np.linalg.norm(vertices[:, upper] - vertices[:, lower], axis=-1).mean(axis=1)

    full = np.flatnonzero(closure == 1)
    still = np.flatnonzero(closure == 0)
    assert len(full) >= 5 and len(still) > 50
    assert np.all(gap(shut, full) < 0.2 * np.maximum(gap(raw, full), 1e-3))
    np.testing.assert_array_equal(shut["expression"][still], raw["expression"][still])
    np.testing.assert_array_equal(shut["jaw"][still], raw["jaw"][still])


def test_lip_closure_without_geometry_writes_the_track_and_says_so(tmp_path, tiny_bundle,
                                                                  speech_wav, flame_files):
    plain, off = tmp_path / "plain.npz", tmp_path / "off.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "-o", plain)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("note: the lips were not shut") == 1
    assert "--flame" in result.stderr
    assert run_server("generate", speech_wav, "--model", tiny_bundle, "--lip-closure", "0",
                      "-o", off).returncode == 0
    plain, off = np.load(plain), np.load(off)
    assert plain["closure"].shape == (plain["expression"].shape[0],)
    np.testing.assert_array_equal(plain["expression"], off["expression"])
    # A FLAME file without a mouth (the test ellipsoid): the same, with the reason.
    no_mouth = tmp_path / "no_mouth.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--flame",
                        flame_files["legacy"], "-o", no_mouth)
    assert result.returncode == 0, result.stderr
    assert "No inner-lip vertices" in result.stderr
    assert "closure" in np.load(no_mouth).files


@pytest.mark.parametrize("amount", ["1.5", "-0.1", "nan"])
def test_lip_closure_outside_0_to_1_is_one_sentence(tmp_path, tiny_bundle, speech_wav, amount):
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--lip-closure",
                        amount, "-o", tmp_path / "take.npz")
    assert result.returncode == 2
    assert "--lip-closure must be from 0 (off) to 1" in result.stderr
    assert not (tmp_path / "take.npz").exists()


def test_no_extras_leaves_out_the_closure_track(tmp_path, tiny_bundle, speech_wav):
    out = tmp_path / "take.npz"
    assert run_server("generate", speech_wav, "--model", tiny_bundle, "--no-extras",
                      "-o", out).returncode == 0
    assert "closure" not in np.load(out).files
    assert "--lip-closure" in run_server("generate", "--help").stdout
