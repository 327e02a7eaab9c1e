# SPDX-License-Identifier: GPL-3.0-or-later
"""Where takes go: nothing of the user's is overwritten, impossible outputs are refused before
the model runs, files get the umask's mode, and no take holds a non-finite number."""

import json
import os
import stat
import zipfile

import numpy as np
import pytest
import soundfile

from server.output import is_take_file
from tests.builders import run_server, speech_like, write_overflowing_bundle, write_wav


def _one_error(result, message: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def _generate(audio, bundle, out, *extra):
    return run_server("generate", audio, "--model", bundle, *extra, "-o", out)


def _users_files(tmp_path, speech_wav):
    line = tmp_path / "line.wav"
    line.write_bytes(speech_wav.read_bytes())
    (tmp_path / "notes.txt").write_text("call sheet\n")
    (tmp_path / "head.pkl").write_bytes(b"\x80\x04K\x01.")
    np.savez(tmp_path / "mine.npz", points=np.arange(3))
    (tmp_path / "notes.json").write_text('{"expression_notes": "keep"}')
    return line


@pytest.mark.parametrize("name,message", [
    ("line.wav", "is the input audio"),
    ("notes.txt", "must end in .npz or .json"),
    ("head.pkl", "must end in .npz or .json"),
    ("mine.npz", "already exists and is not a take written by EMOTE"),
    ("notes.json", "already exists and is not a take written by EMOTE"),
])
def test_a_file_that_is_not_a_take_is_never_overwritten(tmp_path, tiny_bundle, speech_wav,
                                                         name, message):
    line = _users_files(tmp_path, speech_wav)
    target = tmp_path / name
    before = target.read_bytes()
    # A model folder that does not exist: the output must be refused before it is looked at.
    _one_error(_generate(line, tmp_path / "no-model", target), message)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["line.wav", "notes.txt", "head.pkl", "mine.npz", "notes.json"])


def test_a_previous_take_is_replaced(tmp_path, tiny_bundle, speech_wav):
    for suffix in (".npz", ".json"):
        out = tmp_path / f"take{suffix}"
        assert _generate(speech_wav, tiny_bundle, out, "--emotion", "Happy").returncode == 0
        assert is_take_file(out)
        first = out.read_bytes()
        result = _generate(speech_wav, tiny_bundle, out, "--emotion", "Sad")
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() != first
    assert json.loads((tmp_path / "take.json").read_text())["label"].startswith("Sad")


def test_devices_pipes_and_links_are_never_replaced(tmp_path, tiny_bundle, speech_wav):
    os.symlink(os.devnull, tmp_path / "null.npz")
    os.mkfifo(tmp_path / "pipe.npz")
    assert _generate(speech_wav, tiny_bundle, tmp_path / "take.npz").returncode == 0
    os.symlink(tmp_path / "take.npz", tmp_path / "link.npz")
    for name, message in (("null.npz", "is a symbolic link"), ("pipe.npz", "not a regular file"),
                          ("link.npz", "is a symbolic link")):
        _one_error(_generate(speech_wav, tmp_path / "no-model", tmp_path / name), message)
    assert os.readlink(tmp_path / "null.npz") == os.devnull
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.npz").st_mode)
    assert os.path.islink(tmp_path / "link.npz")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_take_files_get_the_mode_the_umask_gives(tmp_path, tiny_bundle, speech_wav, umask):
    old = os.umask(umask)
    try:
        result = _generate(speech_wav, tiny_bundle, tmp_path / "take.npz")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "take.npz").st_mode) == 0o666 & ~umask


def test_an_output_ending_in_a_slash_is_a_folder(tmp_path, tiny_bundle, speech_wav):
    result = _generate(speech_wav, tiny_bundle, f"{tmp_path / 'newdir'}/", "--emotion", "Sad")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "newdir").is_dir()
    assert [p.name for p in (tmp_path / "newdir").iterdir()] == ["speech_Sad.npz"]


def _read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "take.npz"


@pytest.mark.parametrize("case,message", [
    ("inside a file", "is a file, not a folder"),
    ("read-only place", "Cannot write into '/sys'"),
    ("read-only folder", "Cannot write into"),
    ("batch into a file", "with several takes the output must be a folder"),
])
def test_impossible_outputs_are_refused_before_the_model_runs(tmp_path, speech_wav, case,
                                                              message):
    if case == "read-only folder" and os.geteuid() == 0:
        pytest.skip("permissions do not bind root; the /sys case covers it")
    audio = [speech_wav]
    if case == "inside a file":
        out = tmp_path / "file.wav" / "x.npz"
        (tmp_path / "file.wav").write_bytes(b"RIFF")
    elif case == "read-only place":
        out = "/sys/emote-take.npz"
    elif case == "read-only folder":
        out = _read_only_folder(tmp_path)
    else:
        out = tmp_path / "existing.npz"
        out.write_bytes(b"user data")
        audio = [speech_wav, write_wav(tmp_path / "two.wav", 1.0)]
    result = run_server("generate", *audio, "--model", tmp_path / "no-model", "-o", out)
    _one_error(result, message)


def test_batch_outputs_whose_names_collide_are_refused(tmp_path, tiny_bundle):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_wav(tmp_path / folder / "line.wav", 1.0, seed=len(folder))
    soundfile.write(str(tmp_path / "a" / "line.flac"), speech_like(1.0, seed=3), 16_000)
    out = tmp_path / "out"
    result = run_server("generate", tmp_path / "a" / "line.wav", tmp_path / "b" / "line.wav",
                        tmp_path / "a" / "line.flac", "--model", tiny_bundle, "-o", out)
    line = _one_error(result, "would both be written to")
    assert "a/line.wav" in line and "b/line.wav" in line
    assert not out.exists()


def _nan_sources(tmp_path):
    soundfile.write(str(tmp_path / "nan.wav"), np.full(32_000, np.nan, np.float32), 16_000,
                    subtype="FLOAT")
    soundfile.write(str(tmp_path / "inf.wav"), np.full(32_000, np.inf, np.float32), 16_000,
                    subtype="FLOAT")
    condition = np.zeros(43)
    condition[[0, 10, 11]] = 1
    condition[3] = np.nan
    np.save(tmp_path / "nan.npy", condition)
    condition[3] = 1e30
    np.save(tmp_path / "huge.npy", condition)
    return {
        "audio NaN": (["nan.wav"], "non-finite samples (NaN or infinity)"),
        "audio all-inf": (["inf.wav"], "non-finite samples (NaN or infinity)"),
        "condition NaN": (["speech", "--condition", "nan.npy"], "NaN or infinite values"),
        "condition 1e30": (["speech", "--condition", "huge.npy"], "must lie within ±10"),
        "mixture 1e30": (["speech", "--emotion", "Happy=1e30"], "must be at most 10"),
        "negative mixture": (["speech", "--emotion", "Happy=-1,Sad=2"], "must not be negative"),
    }


@pytest.mark.parametrize("source", ["audio NaN", "audio all-inf", "condition NaN",
                                    "condition 1e30", "mixture 1e30", "negative mixture"])
def test_non_finite_and_absurd_inputs_are_refused_and_nothing_is_written(
        tmp_path, tiny_bundle, speech_wav, source):
    args, message = _nan_sources(tmp_path)[source]
    args = [speech_wav if a == "speech" else tmp_path / a if a.endswith((".wav", ".npy"))
            else a for a in args]
    out = tmp_path / "out" / "take.json"
    _one_error(run_server("generate", *args, "--model", tiny_bundle, "-o", out), message)
    assert not (tmp_path / "out").exists()


def test_a_model_that_overflows_gives_a_sentence_not_a_file(tmp_path, speech_wav):
    bundle = write_overflowing_bundle(tmp_path / "overflowing")
    for out in (tmp_path / "take.npz", tmp_path / "take.json"):
        _one_error(_generate(speech_wav, bundle, out),
                   "The model produced non-finite values (NaN or infinity) for this take; "
                   "the model's weights or the input are broken.")
        assert not out.exists()


def test_is_take_file_reads_keys_not_suffixes(tmp_path):
    np.savez(tmp_path / "take.npz", **{k: np.zeros(1) for k in
                                      ("expression", "jaw", "fps", "condition", "label")})
    np.savez(tmp_path / "other.npz", expression=np.zeros(1))
    with zipfile.ZipFile(tmp_path / "model.npz", "w") as archive:
        archive.writestr("weights.bin", b"0")
    assert is_take_file(tmp_path / "take.npz")
    assert not is_take_file(tmp_path / "other.npz") and not is_take_file(tmp_path / "model.npz")
    assert not is_take_file(tmp_path / "missing.npz")
