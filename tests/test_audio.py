# SPDX-License-Identifier: GPL-3.0-or-later
"""Audio in: formats, resampling, trimming, and a clear sentence for every bad input."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from server.audio import MAX_SECONDS, AudioError, frame_count, load_audio, normalise
from tests.builders import ROOT, speech_like, write_wav


def test_frame_count_is_floor_of_samples_over_640():
    assert frame_count(640 * 75 + 639) == 75
    assert frame_count(639) == 0


def test_normalise_is_zero_mean_unit_variance():
    x = normalise(speech_like(1.0) * 0.1 + 0.05)
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std()) - 1) < 1e-3


def test_16k_mono_wav_is_read_as_is(tmp_path):
    path = write_wav(tmp_path / "a.wav", 2.0)
    clip = load_audio(path)
    expected = soundfile.read(str(path), dtype="float32")[0]
    np.testing.assert_array_equal(clip.samples, expected)
    assert clip.frames == 50 and clip.warnings == []


def test_44k_stereo_flac_is_resampled_and_mixed_down(tmp_path):
    path = write_wav(tmp_path / "a.flac", 2.0, rate=44_100, channels=2, fmt="FLAC")
    clip = load_audio(path)
    assert clip.source_rate == 44_100 and clip.source_channels == 2
    assert abs(len(clip.samples) - 32_000) <= 1 and clip.frames == 50


def test_8k_stereo_mp3_is_refused_unless_allowed(tmp_path):
    path = write_wav(tmp_path / "phone.mp3", 3.0, rate=8_000, channels=2, fmt="MP3")
    with pytest.raises(AudioError, match="sampled at 8000 Hz.*16 kHz or better"):
        load_audio(path)
    clip = load_audio(path, allow_low_rate=True)
    assert clip.source_rate == 8_000 and clip.source_channels == 2
    assert 74 <= clip.frames <= 76  # MP3 adds encoder padding
    assert any("8000 Hz" in w for w in clip.warnings)


def test_ogg_is_read(tmp_path):
    clip = load_audio(write_wav(tmp_path / "a.ogg", 1.5, rate=22_050, fmt="OGG"))
    assert 36 <= clip.frames <= 38


def test_m4a_is_read_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "a.m4a"
    wave = speech_like(2.0, rate=48_000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48_000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="fltp",
                                           layout="mono")
        frame.rate = 48_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    clip = load_audio(path)
    assert clip.source_rate == 48_000 and 49 <= clip.frames <= 52


def test_start_and_end_select_the_strip_range(tmp_path):
    path = write_wav(tmp_path / "a.wav", 4.0)
    full = load_audio(path)
    part = load_audio(path, start=1.0, end=2.5)
    np.testing.assert_array_equal(part.samples, full.samples[16_000:40_000])
    assert load_audio(path, start=3.0, end=99).frames == 25  # an end past the file is clipped


@pytest.mark.parametrize("case,message", [
    ("missing", "Audio file not found"),
    ("empty", "is empty"),
    ("text", "is not an audio file that can be read"),
    ("zero", "contains no audio samples"),
    ("short", "at least 0.32 s"),
    ("silent", "is silent"),
    ("range", "starts at 5.000 s but"),
])
def test_bad_audio_is_explained(tmp_path, case, message):
    path = tmp_path / f"{case}.wav"
    kwargs = {}
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_bytes(b"this is not audio at all\n" * 100)
    elif case == "zero":
        soundfile.write(str(path), np.zeros(0, np.float32), 16_000)
    elif case == "short":
        write_wav(path, 0.1)
    elif case == "silent":
        soundfile.write(str(path), np.zeros(32_000, np.float32), 16_000)
    elif case == "range":
        write_wav(path, 2.0)
        kwargs = {"start": 5.0, "end": 6.0}
    with pytest.raises(AudioError, match=message):
        load_audio(path, **kwargs)


def _same_take_input(clip_samples: np.ndarray, clean: np.ndarray) -> None:
    """wav2vec2 sees the normalised samples: equal normalised samples give the same take."""
    np.testing.assert_allclose(normalise(clip_samples), normalise(clean), atol=2e-3)


@pytest.mark.parametrize("distortion", ["dc offset 50", "above 0 dBFS (x8)"])
def test_float_audio_out_of_range_is_rescaled_not_clipped(tmp_path, distortion):
    clean = speech_like(3.0, seed=7)
    loud = clean * 0.3 + 50 if distortion.startswith("dc") else clean * 8
    path = tmp_path / "float.wav"
    soundfile.write(str(path), loud.astype(np.float32), 16_000, subtype="FLOAT")
    clip = load_audio(path)
    assert np.abs(clip.samples).max() <= 1.0
    _same_take_input(clip.samples, clean)


def test_float_audio_out_of_range_at_44k_is_rescaled_then_resampled(tmp_path):
    clean = speech_like(2.0, rate=44_100, seed=8)
    path = tmp_path / "loud44.wav"
    soundfile.write(str(path), (clean * 8).astype(np.float32), 44_100, subtype="FLOAT")
    reference = tmp_path / "clean44.wav"
    soundfile.write(str(reference), clean, 44_100, subtype="FLOAT")
    _same_take_input(load_audio(path).samples, load_audio(reference).samples)


@pytest.mark.parametrize("fill", ["inf", "nan", "-inf"])
def test_all_non_finite_float_audio_is_refused(tmp_path, fill):
    path = tmp_path / f"{fill}.wav"
    soundfile.write(str(path), np.full(32_000, float(fill), np.float32), 16_000,
                    subtype="FLOAT")
    with pytest.raises(AudioError, match=r"non-finite samples \(NaN or infinity\).*damaged"):
        load_audio(path)


def test_one_inf_sample_inside_speech_is_clipped_with_a_warning(tmp_path):
    clean = speech_like(3.0, seed=9)
    damaged = clean.copy()
    damaged[20_000] = np.inf
    path = tmp_path / "one_inf.wav"
    soundfile.write(str(path), damaged, 16_000, subtype="FLOAT")
    clip = load_audio(path)
    assert np.all(np.isfinite(clip.samples)) and clip.samples[20_000] == 1.0
    assert any("non-finite" in w for w in clip.warnings)
    keep = np.arange(len(clean)) != 20_000
    np.testing.assert_array_equal(clip.samples[keep], clean[keep])


def test_stereo_whose_channels_cancel_says_so(tmp_path):
    wave = speech_like(2.0, seed=3)
    path = tmp_path / "inverted.wav"
    soundfile.write(str(path), np.stack([wave, -wave], axis=1), 16_000)
    with pytest.raises(AudioError, match="channels cancel when mixed to mono"):
        load_audio(path)


def test_a_truncated_wav_is_read_with_a_warning(tmp_path):
    full = write_wav(tmp_path / "full.wav", 5.25)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:100_000])
    clip = load_audio(cut)
    assert clip.frames == 78
    assert any("is cut off" in w and "168,000" in w for w in clip.warnings), clip.warnings
    assert load_audio(full).warnings == []


def test_a_4_gb_wav_is_refused_from_its_header_before_decoding(tmp_path):
    """37 hours at 16 kHz, as a sparse file: refused at once, with bounded memory. Run in a
    subprocess under a 3 GB address-space limit, so that a decoder that tried to read it
    fails there instead of exhausting the machine."""
    path = tmp_path / "huge.wav"
    data_bytes = 0xFFFF_0000
    with open(path, "wb") as f:
        f.write(b"RIFF" + (data_bytes + 36).to_bytes(4, "little") + b"WAVEfmt "
                + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
                + (1).to_bytes(2, "little") + (16_000).to_bytes(4, "little")
                + (32_000).to_bytes(4, "little") + (2).to_bytes(2, "little")
                + (16).to_bytes(2, "little") + b"data" + data_bytes.to_bytes(4, "little"))
        f.truncate(44 + data_bytes)
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
            "from server.audio import AudioError, load_audio\n"
            "try:\n"
            "    load_audio(sys.argv[1])\n"
            "except AudioError as exc:\n"
            "    print(exc)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "37.3 hours of audio" in result.stdout and "at most 2 hours" in result.stdout
    assert time.monotonic() - started < 30
    assert MAX_SECONDS == 7200


def test_a_range_of_a_long_file_is_read_without_decoding_the_rest(tmp_path):
    path = write_wav(tmp_path / "long.wav", 30.0)
    part = load_audio(path, start=20.0, end=21.0)
    assert part.frames == 25
    np.testing.assert_array_equal(part.samples, soundfile.read(str(path), dtype="float32",
                                                               start=320_000, stop=336_000)[0])


@pytest.mark.parametrize("bounds", [{"start": float("nan")}, {"end": float("nan")},
                                    {"start": 0.5, "end": float("nan")}])
def test_a_nan_range_is_explained(tmp_path, bounds):
    path = write_wav(tmp_path / "a.wav", 2.0)
    with pytest.raises(AudioError, match="is NaN; give it in seconds"):
        load_audio(path, **bounds)


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    name = os.path.join(os.fsencode(tmp_path), b"bad\xffname.wav")
    plain = write_wav(tmp_path / "plain.wav", 2.0)
    os.rename(plain, name)
    path = Path(os.fsdecode(name))
    clip = load_audio(path)
    assert clip.frames == 50 and clip.source == str(path)
