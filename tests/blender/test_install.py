# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension as an artist installs it (the zip through Install from Disk): its wheels land in
Blender's extension site-packages, one build of each for this Blender's Python, and they work
with Blender's own NumPy. Also the harness's rule that a DeprecationWarning raised from the
add-on's own code fails the test, and the 5.3 strip timing names."""

from __future__ import annotations

import sys
import warnings
import wave
import zipfile
from pathlib import Path

import bpy
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
DISTRIBUTIONS = ("onnxruntime", "soundfile", "soxr", "cffi", "pycparser", "typing_extensions")


def extension_site_packages() -> Path:
    local = Path(bpy.utils.user_resource("EXTENSIONS", path=".local"))
    return local / "lib" / f"python{PYTHON}" / "site-packages"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _message(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def relu_model() -> bytes:
    """An ONNX model ``y = Relu(x)`` for float x of shape (3,), written field by field
    (ModelProto: ir_version 1, graph 7, opset_import 8)."""
    tensor = _int(1, 1) + _message(2, _message(1, _int(1, 3)))  # FLOAT, shape (3,)

    def value(name: str) -> bytes:
        return _message(1, name.encode()) + _message(2, _message(1, tensor))

    node = _message(1, b"x") + _message(2, b"y") + _message(4, b"Relu")
    graph = (_message(1, node) + _message(2, b"relu") + _message(11, value("x"))
             + _message(12, value("y")))
    return _int(1, 8) + _message(7, graph) + _message(8, _int(2, 13))


def write_silence(path: Path, seconds: float, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path


def test_zip_installs_one_build_of_each_wheel_for_this_python(addon):
    site = extension_site_packages()
    pins = dict(build_extension.requirements())
    for name in DISTRIBUTIONS:
        found = sorted(p.name for p in site.glob(f"{name}-*.dist-info"))
        assert found == [f"{name}-{pins[name]}.dist-info"], (name, found)
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    bindings = sorted(p.name for p in (site / "onnxruntime" / "capi").glob("*pybind11_state*"))
    assert len(bindings) == 1 and tag in bindings[0], bindings
    with zipfile.ZipFile(addon.archive) as archive:  # the zip itself holds both Pythons' builds
        shipped = [n for n in archive.namelist() if n.startswith("wheels/onnxruntime-")]
    assert len(shipped) == 2


def test_wheels_work_inside_blender(addon):
    import onnxruntime
    import soundfile
    import soxr

    site = extension_site_packages()
    for module in (onnxruntime, soundfile, soxr):
        assert Path(module.__file__).is_relative_to(site), module.__file__
    session = onnxruntime.InferenceSession(relu_model(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([-1.0, 0.5, 2.0], np.float32)})
    np.testing.assert_array_equal(y, [0.0, 0.5, 2.0])
    audio, rate = soundfile.read(ROOT / "server" / "demo" / "sentence.wav", dtype="float32")
    resampled = soxr.resample(audio, rate, 16000)
    assert abs(len(resampled) - len(audio) * 16000 / rate) <= 2


def test_deprecation_warning_from_addon_code_fails_the_test(addon):
    code = compile("import warnings\nwarnings.warn('an old API', DeprecationWarning)",
                   "<add-on code>", "exec")
    with pytest.raises(DeprecationWarning):
        exec(code, {"__name__": f"{addon.__name__}.strips"})
    with pytest.warns(DeprecationWarning):  # from elsewhere it stays a warning
        exec(code, {"__name__": "a_users_script"})


needs_audio = pytest.mark.skipif(bpy.app.version < (4, 5, 0),
                                 reason="the 4.2 bpy wheel has no audio support")


@needs_audio
def test_strip_timing_through_compat(clean, addon, tmp_path):
    """A 100-frame sound placed at frame 10 with handles trimmed by 7 and 5 frames plays frames
    17-104, from 0.28 s to 3.8 s of its file; on 5.3 the add-on reads that without touching a
    name that 5.3 deprecates."""
    path = write_silence(tmp_path / "four_seconds.wav", 4.0)
    strip = addon.compat.new_sound_strip(clean, "line", str(path), 1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # this test's own set-up
        strip.frame_offset_start, strip.frame_offset_end = 7, 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        timing = (addon.compat.strip_content_start(strip), addon.compat.strip_first_frame(strip),
                  addon.compat.strip_end_frame(strip))
        request = addon.strips.audio_request(clean, strip)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], \
        [str(w.message) for w in caught]
    assert timing == (10.0, 17, 105)
    assert (request.strip_start, request.frame_start, request.frame_end) == (10.0, 17, 105)
    assert request.start == pytest.approx(7 / 25) and request.end == pytest.approx(95 / 25)


@pytest.mark.skipif(bpy.app.version < (5, 3, 0), reason="5.3 deprecates the old strip names")
def test_blender_deprecation_in_addon_code_fails_the_test(clean, addon, tmp_path):
    """Blender raises its deprecations from C without checking the result, so the test sees a
    SystemError caused by the DeprecationWarning; it fails either way."""
    strip = addon.compat.new_sound_strip(clean, "line", str(write_silence(tmp_path / "a.wav", 1)),
                                         1, 1)
    module = type(sys)(f"{addon.__name__}.old_timing")
    exec("def first_frame(strip):\n    return len([strip.frame_final_start])\n",
         module.__dict__)
    with pytest.raises((DeprecationWarning, SystemError)) as raised:
        module.first_frame(strip)
    chain = [raised.value, raised.value.__cause__, raised.value.__context__]
    assert any(isinstance(e, DeprecationWarning) and "frame_final_start" in str(e)
               for e in chain)
