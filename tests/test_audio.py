# SPDX-License-Identifier: GPL-3.0-or-later
"""Audio in: formats, resampling, trimming, and a clear sentence for every bad input."""

import numpy as np
import pytest
import soundfile

from server.audio import AudioError, frame_count, load_audio, normalise
from tests.builders import speech_like, write_wav


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
