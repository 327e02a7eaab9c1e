# SPDX-License-Identifier: GPL-3.0-or-later
"""The four platform zips of the extension: size, manifest, wheels (one of each dependency for
each of Blender's Pythons, all for the zip's platform), the worker source with the demo model,
and Blender's own validator on each zip."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402

PLATFORMS = ("linux-x64", "windows-x64", "macos-arm64", "macos-x64")
# The wheel platform tags each Blender platform installs (Blender ignores glibc and macOS
# versions; universal2 serves both Macs).
PLATFORM_TAG = {
    "linux-x64": re.compile(r"manylinux(1|2010|2014|_2_\d+)_x86_64$"),
    "windows-x64": re.compile(r"win_amd64$"),
    "macos-arm64": re.compile(r"macosx_\d+_\d+_(arm64|universal2)$"),
    "macos-x64": re.compile(r"macosx_\d+_\d+_(x86_64|universal2)$"),
}
BLENDER_PYTHONS = ((3, 11), (3, 13))  # Blender 4.2-5.0, 5.1-5.3
BPY_VENVS = sorted(ROOT.glob(".venv-bpy*/bin/python"))


def fits_platform(wheel: str, platform: str) -> bool:
    tags = wheel[:-len(".whl")].split("-")[-1].split(".")
    return any(tag == "any" or PLATFORM_TAG[platform].match(tag) for tag in tags)


def fits_python(wheel: str, python: tuple[int, int]) -> bool:
    """As Blender decides: built for this CPython, the stable ABI of an older one, or py3."""
    python_tags, abi_tags = (part.split(".") for part in wheel[:-len(".whl")].split("-")[-3:-1])
    major, minor = python
    for tag in python_tags:
        if tag in (f"cp{major}{minor}", f"py{major}", f"py{major}{minor}"):
            return True
        found = re.fullmatch(r"cp(\d)(\d+)", tag)
        if found and "abi3" in abi_tags and (int(found[1]), int(found[2])) <= python:
            return True
    return False


def distribution(wheel: str) -> str:
    return wheel.split("-")[0].lower()


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("extension")
    built = build_extension.build(out, list(PLATFORMS))
    return dict(zip(PLATFORMS, built, strict=True))


def manifest_of(archive: Path) -> dict:
    with zipfile.ZipFile(archive) as zf:
        return tomllib.loads(zf.read("blender_manifest.toml").decode())


def test_one_zip_per_platform_named_for_it(zips):
    version = tomllib.loads((ROOT / "blender_manifest.toml").read_text())["version"]
    for platform, archive in zips.items():
        assert archive.name == f"emote_lipsync-{version}-{platform.replace('-', '_')}.zip"
        assert archive.stat().st_size <= 60_000_000, (archive.name, archive.stat().st_size)


def test_manifest_lists_the_platform_and_every_wheel_in_the_zip(zips):
    for platform, archive in zips.items():
        pins = {name.lower(): version for name, version
                in build_extension.requirements(platform_name=platform)}
        manifest = manifest_of(archive)
        assert manifest["platforms"] == [platform]
        with zipfile.ZipFile(archive) as zf:
            shipped = sorted(n for n in zf.namelist() if n.startswith("wheels/"))
        listed = manifest["wheels"]
        assert sorted(w.removeprefix("./") for w in listed) == shipped
        names = [w.rsplit("/", 1)[1] for w in listed]
        assert not [n for n in names if distribution(n) == "numpy"]  # Blender's own
        for name in names:
            assert fits_platform(name, platform), (platform, name)
            assert name.split("-")[1] == pins[distribution(name)], name
        for python in BLENDER_PYTHONS:
            fitting = [distribution(n) for n in names if fits_python(n, python)]
            # Exactly one of each: two builds of one package in one site-packages would clash.
            assert sorted(fitting) == sorted(pins), (platform, python, fitting)


def test_zip_holds_the_addon_the_worker_and_the_demo_model(zips):
    model = sorted(p.relative_to(ROOT).as_posix()
                   for p in (ROOT / "server" / "demo" / "model").iterdir() if p.is_file())
    assert model, "the demo model is missing from server/demo/model"
    for archive in zips.values():
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            assert zf.testzip() is None
        assert {"blender_manifest.toml", "LICENSE", "__init__.py", "compat.py"} <= names
        assert {"server/__init__.py", "server/__main__.py", "server/protocol.py"} <= names
        assert set(model) <= names, archive.name
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_a_zip_over_the_limit_fails_the_build(tmp_path, monkeypatch):
    monkeypatch.setattr(build_extension, "MAX_BYTES", 1_000_000)
    with pytest.raises(build_extension.BuildError, match="over the 1 MB limit"):
        build_extension.build_platform(tmp_path, "linux-x64")
    assert not list(tmp_path.glob("*.zip"))


@pytest.mark.skipif(not BPY_VENVS, reason="no bpy venv (tools/setup_blender.sh) to take "
                                          "Blender's extension validator from")
def test_blender_validates_each_zip(zips):
    for python in BPY_VENVS:
        validator = next(python.parents[1].glob(
            "lib/python3.*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        for archive in zips.values():
            done = subprocess.run([str(python), str(validator), "validate", str(archive)],
                                  capture_output=True, text=True)
            assert done.returncode == 0 and "Success" in done.stdout, \
                (python, archive.name, done.stdout, done.stderr)


def test_pins_follow_the_platform_markers(tmp_path):
    listed = tmp_path / "requirements.txt"
    listed.write_text('# a comment\n'
                      'onnxruntime==1.31.1; sys_platform == "linux" or sys_platform == "win32"\n'
                      'onnxruntime==1.23.2 ; sys_platform == "darwin"  # the Macs\n'
                      'soxr==1.1.0\n'
                      'extra==2.0; sys_platform == "darwin" and platform_machine != "arm64"\n')
    pins = {p: dict(build_extension.requirements(listed, p)) for p in PLATFORMS}
    assert pins["linux-x64"] == pins["windows-x64"] == {"onnxruntime": "1.31.1",
                                                        "soxr": "1.1.0"}
    assert pins["macos-arm64"] == {"onnxruntime": "1.23.2", "soxr": "1.1.0"}
    assert pins["macos-x64"] == {"onnxruntime": "1.23.2", "soxr": "1.1.0", "extra": "2.0"}


@pytest.mark.parametrize("text, message", [
    ('onnxruntime==1.31.1; python_version >= "3.11"\n', "not one this build reads"),
    ("onnxruntime>=1.23\n", "is not pinned"),
    ('onnxruntime==1.31.1\nonnxruntime==1.23.2; sys_platform == "linux"\n', "pinned twice"),
])
def test_a_requirement_the_build_cannot_read_is_refused(tmp_path, text, message):
    listed = tmp_path / "requirements.txt"
    listed.write_text(text)
    with pytest.raises(build_extension.BuildError, match=message) as refused:
        build_extension.requirements(listed, "linux-x64")
    assert str(refused.value).startswith(f"{listed}: ")  # names the file it read


def test_each_platform_gets_its_own_onnx_runtime():
    """Linux and Windows take the faster ONNX Runtime; the Macs keep the last release with
    Intel Mac wheels that also runs on macOS 13."""
    versions = {p: dict(build_extension.requirements(platform_name=p))["onnxruntime"]
                for p in PLATFORMS}
    assert versions["linux-x64"] == versions["windows-x64"]
    assert versions["macos-arm64"] == versions["macos-x64"] == "1.23.2"
    assert versions["linux-x64"] != "1.23.2"
