# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable extension, one zip per platform.

``python tools/build_extension.py OUTDIR [--platforms linux-x64,windows-x64,...] [--wheels DIR]``
writes ``OUTDIR/emote_lipsync-<version>-<platform>.zip`` (``linux_x64``, ``windows_x64``,
``macos_arm64``, ``macos_x64``), each holding the add-on (``emote_blender/`` at the zip root),
the worker source it runs (``server/``, the demo model included), the licence, and in
``wheels/`` the worker's inference dependencies (tools/requirements-extension.txt) for
Python 3.11 (Blender 4.2-5.0) and Python 3.13 (Blender 5.1-5.3). The zip's manifest lists that
platform and those wheels. NumPy is Blender's own and is not shipped.

One zip serves both Pythons because every supported Blender installs only the wheels that fit
its own Python and platform (``_extensions_wheel_filter_for_this_system`` in
``bl_pkg/bl_extension_ops.py``, the same rules in 4.2, 4.5, 5.0 and 5.3): a cp311 wheel is
skipped by a Python 3.13 Blender and a cp313 wheel by a Python 3.11 one (a stable-ABI cp312
wheel fits 3.13 only), so exactly one onnxruntime lands in the extensions' site-packages.

Wheels come from ``pip download --only-binary=:all: --no-deps`` into a cache folder (default
``dist/wheels-cache/``), reused between builds; a build whose wheels are all cached needs no
network. Any Python 3.11 or later with pip; no Blender needed. A zip over 60 MB fails the build.
"""

from __future__ import annotations

import argparse
import json
import platform as host
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tools" / "requirements-extension.txt"
WHEEL_CACHE = ROOT / "dist" / "wheels-cache"
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
MAX_BYTES = 60_000_000  # what an extension platform may reasonably ask an artist to download

PYTHONS = ("3.11", "3.13")  # Blender 4.2-5.0, Blender 5.1-5.3
# Blender platform -> the wheel platform tags pip may pick for it. Blender 4.2+ needs glibc 2.28
# on Linux; the Macs' onnxruntime (1.23.2) needs macOS 13 (pip also accepts older macOS tags
# from these).
LINUX_TAGS = (tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1))
              + ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"))
PLATFORMS: dict[str, tuple[str, ...]] = {
    "linux-x64": LINUX_TAGS,
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_13_0_arm64",),
    "macos-x64": ("macosx_13_0_x86_64",),
}
MACOS_TAG = re.compile(r"macosx_(\d+)_(\d+)_(\w+)$")
# The environment markers of requirements-extension.txt, as each platform's Python sets them.
MARKERS: dict[str, dict[str, str]] = {
    "linux-x64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "windows-x64": {"sys_platform": "win32", "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "macos-x64": {"sys_platform": "darwin", "platform_machine": "x86_64"},
}
MARKER_TEST = re.compile(r'(\w+)\s*(==|!=)\s*"([^"]*)"$')


class BuildError(RuntimeError):
    """The extension could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class Wheel:
    """A wheel file name, split as the binary distribution format defines it."""

    path: Path
    name: str  # normalised: lower case, runs of -_. as one _
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> Wheel | None:
        parts = path.name[:-len(".whl")].split("-")
        if not path.name.endswith(".whl") or len(parts) not in (5, 6):
            return None
        return cls(path, normalise(parts[0]), parts[1], tuple(parts[-3].split(".")),
                   tuple(parts[-2].split(".")), tuple(parts[-1].split(".")))

    def python_rank(self, python: str) -> int | None:
        """How well this wheel fits CPython ``python`` ("3.13"): 0 built for it, 1 stable
        ABI, 2 pure Python; None when it does not fit."""
        major, minor = (int(part) for part in python.split("."))
        own = f"cp{major}{minor}"
        if own in self.python_tags and own in self.abi_tags:
            return 0
        if "abi3" in self.abi_tags:
            for tag in self.python_tags:
                found = re.fullmatch(r"cp(\d)(\d+)", tag)
                if found and int(found[1]) == major and int(found[2]) <= minor:
                    return 1
        if "none" in self.abi_tags and ({f"py{major}", f"py{major}{minor}", own}
                                        & set(self.python_tags)):
            return 2
        return None

    def platform_rank(self, platform: str) -> int | None:
        """How well this wheel fits the Blender ``platform``: 0 built for it, 1 a universal
        macOS build, 2 any platform; None when it does not fit."""
        accepted = PLATFORMS[platform]
        best = None
        for tag in self.platform_tags:
            rank = None
            if tag in accepted:
                rank = 0
            elif tag == "any":
                rank = 2
            elif (found := MACOS_TAG.match(tag)) and platform.startswith("macos"):
                wanted = MACOS_TAG.match(accepted[0])
                arch_fits = found[3] == wanted[3] or found[3] == "universal2"
                if arch_fits and (int(found[1]), int(found[2])) <= (int(wanted[1]),
                                                                      int(wanted[2])):
                    rank = 0 if found[3] == wanted[3] else 1
            if rank is not None and (best is None or rank < best):
                best = rank
        return best


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def this_platform() -> str:
    """The Blender platform of the Python running this ("linux-x64", ...)."""
    machine = host.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64"}.get(machine)
    system = {"linux": "linux", "win32": "windows", "darwin": "macos"}.get(sys.platform)
    name = f"{system}-{arch}"
    if name not in PLATFORMS:
        raise BuildError(f"This machine ({sys.platform}, {host.machine()}) is not one of "
                         f"the extension's platforms ({', '.join(PLATFORMS)}).")
    return name


def marker_holds(marker: str, platform_name: str) -> bool:
    """Whether an environment marker (``sys_platform`` / ``platform_machine`` compared with
    ``==`` or ``!=``, joined by ``and`` and ``or``) holds on ``platform_name``;
    ``ValueError`` for any other marker."""
    environment = MARKERS[platform_name]

    def test(text: str) -> bool:
        found = MARKER_TEST.match(text.strip())
        if found is None or found[1] not in environment:
            raise ValueError(f"the marker '{marker.strip()}' is not one this build reads "
                             "(sys_platform or platform_machine, == or !=, joined by and / or)")
        return (environment[found[1]] == found[3]) == (found[2] == "==")

    return any(all(test(part) for part in alternative.split(" and "))
               for alternative in marker.split(" or "))


def requirements(path: Path = REQUIREMENTS, platform_name: str | None = None
                 ) -> list[tuple[str, str]]:
    """The pinned ``(name, version)`` pairs of the requirements file for ``platform_name``
    (default: this machine's), its environment markers applied; one pin per name."""
    platform_name = platform_name or this_platform()
    pins: dict[str, tuple[str, str]] = {}  # by normalised name
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line, _, marker = line.partition(";")
        try:
            if marker.strip() and not marker_holds(marker, platform_name):
                continue
        except ValueError as exc:
            raise BuildError(f"{path}: {exc}.") from None
        name, sep, version = line.partition("==")
        if not sep:
            raise BuildError(f"{path}: '{line.strip()}' is not pinned; write it as "
                             "name==version.")
        name = name.strip()
        if normalise(name) in pins:
            raise BuildError(f"{path}: {name} is pinned twice for {platform_name}.")
        pins[normalise(name)] = (name, version.strip())
    return list(pins.values())


def pick_wheel(cache: Path, name: str, version: str, platform: str, python: str) -> Path | None:
    """The cached wheel of ``name==version`` that Blender on ``platform`` with ``python`` would
    install, preferring one built for that Python over the stable ABI over pure Python."""
    candidates = []
    for path in sorted(cache.glob("*.whl")):
        wheel = Wheel.parse(path)
        if wheel is None or wheel.name != normalise(name) or wheel.version != version:
            continue
        python_rank, platform_rank = wheel.python_rank(python), wheel.platform_rank(platform)
        if python_rank is not None and platform_rank is not None:
            candidates.append((python_rank, platform_rank, path.name, path))
    return min(candidates)[3] if candidates else None


def download(cache: Path, pins: list[tuple[str, str]], platform: str, python: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--no-deps", "--python-version", python,
               "--implementation", "cp", "-d", str(cache)]
    for tag in PLATFORMS[platform]:
        command += ["--platform", tag]
    command += [f"{name}=={version}" for name, version in pins]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(
            f"pip could not download the wheels for {platform}, Python {python} "
            f"({', '.join(f'{n}=={v}' for n, v in pins)}):\n{done.stderr.strip()}\n"
            "Check the network connection to PyPI, or fill the wheel cache "
            f"({cache}) with these wheels.")


def platform_wheels(cache: Path, platform: str) -> list[Path]:
    """Every wheel ``platform`` needs for both Pythons, fetched into ``cache`` when missing;
    a wheel that serves both Pythons is listed once."""
    cache.mkdir(parents=True, exist_ok=True)
    pins = requirements(platform_name=platform)
    chosen: list[Path] = []
    for python in PYTHONS:
        missing = [pin for pin in pins if pick_wheel(cache, *pin, platform, python) is None]
        if missing:
            download(cache, missing, platform, python)
        for name, version in pins:
            path = pick_wheel(cache, name, version, platform, python)
            if path is None:
                raise BuildError(f"PyPI has no wheel of {name}=={version} for {platform} and "
                                 f"Python {python}; pick a version that has one in "
                                 f"{REQUIREMENTS.relative_to(ROOT)}.")
            if path not in chosen:
                chosen.append(path)
    return chosen


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not SKIP_PARTS.intersection(p.parts) and p.suffix != ".pyc")


def platform_manifest(platform: str, wheels: list[str]) -> str:
    """The repository's manifest with ``platforms`` and ``wheels`` added (before the first
    table, where top-level keys must go)."""
    lines = (ROOT / "blender_manifest.toml").read_text().splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    listed = ",\n".join(f"  {json.dumps(w)}" for w in wheels)
    added = [f"platforms = [{json.dumps(platform)}]", f"wheels = [\n{listed},\n]", ""]
    return "\n".join(lines[:first_table] + added + lines[first_table:]) + "\n"


def build_platform(out_dir: Path, platform: str, cache: Path = WHEEL_CACHE) -> Path:
    """Write the zip for one Blender platform (e.g. ``linux-x64``) and return its path."""
    if platform not in PLATFORMS:
        raise BuildError(f"Unknown platform '{platform}'; use one of {', '.join(PLATFORMS)}.")
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    wheels = platform_wheels(cache, platform)
    names = [f"./wheels/{path.name}" for path in wheels]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("blender_manifest.toml", platform_manifest(platform, names))
        archive.write(ROOT / "LICENSE", "LICENSE")
        for path in files_of(ROOT / "emote_blender"):
            archive.write(path, path.relative_to(ROOT / "emote_blender").as_posix())
        for path in files_of(ROOT / "server"):
            archive.write(path, path.relative_to(ROOT).as_posix())
        for path in wheels:  # wheels are zips already: store them as they are
            archive.write(path, f"wheels/{path.name}", compress_type=zipfile.ZIP_STORED)
    size = target.stat().st_size
    if size > MAX_BYTES:
        target.unlink()
        raise BuildError(f"The {platform} zip would be {size / 1e6:.1f} MB, over the "
                         f"{MAX_BYTES / 1e6:.0f} MB limit; drop a wheel or split the zip.")
    return target


def build(out_dir: Path, platforms: list[str] | None = None,
          cache: Path = WHEEL_CACHE) -> list[Path]:
    """Write one zip per platform (all four by default) and return their paths."""
    return [build_platform(out_dir, platform, cache) for platform in platforms or PLATFORMS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write the zips into")
    parser.add_argument("--platforms", default=",".join(PLATFORMS),
                        help=f"comma-separated Blender platforms (default: {','.join(PLATFORMS)})")
    parser.add_argument("--wheels", type=Path, default=WHEEL_CACHE,
                        help="wheel cache folder, reused between builds (default: %(default)s)")
    args = parser.parse_args()
    try:
        for target in build(args.outdir, [p for p in args.platforms.split(",") if p],
                            args.wheels):
            print(target)  # stdout: the zips, one a line, for scripts
            print(f"  {target.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
