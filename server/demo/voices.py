# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline text-to-speech with phone timings, for building a synthetic lip-sync corpus.

Three engines are supported when installed on the system:

* ``espeak-ng`` through its C library (``libespeak-ng.so.1``, loaded with ctypes). Phoneme events
  give each phoneme's start in the audio; the audio arrives in the same callback.
* ``flite`` through its command line: ``-psdur`` prints every segment with its end time while
  ``-o`` writes the wave of the same single utterance.
* ``festival`` through a Scheme script run with ``festival --batch``: it synthesises, writes the
  wave and prints its phone set's name and the Segment relation with end times.

Every engine's phones are mapped to one phone set, lowercase ARPAbet without stress digits plus
``pau`` for silence (see :data:`PHONES`); festival's voices of other languages through a table per
phone set (:data:`FESTIVAL_PHONE_SETS`). Symbols missing from the tables are mapped to the
nearest sensible class and counted; :func:`unmapped_symbols` reports them.

Speaking rate and pitch: espeak-ng applies both natively. flite stretches durations natively;
festival does so through ``Duration_Stretch`` (diphone voices) or the HTS engine's ``-r``
(HTS voices); both engines report the stretched timings. Pitch for flite and festival is shifted
afterwards with ``sox pitch``, which keeps durations, so timings stay valid. Without sox installed
that pitch change is skipped.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import math
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
PAUSE = "pau"
ENGINES = ("espeak-ng", "flite", "festival")

PHONES = frozenset(
    "aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th "
    "uh uw v w y z zh pau".split()
)
VOWELS = frozenset("aa ae ah ao aw ay eh er ey ih iy ow oy uh uw".split())


@dataclass(frozen=True)
class Voice:
    """One engine voice with speaking-rate and pitch factors (1 = engine default)."""

    engine: str
    name: str
    rate: float = 1.0
    pitch: float = 1.0


@dataclass
class Utterance:
    """Synthesised speech: float32 mono audio at SAMPLE_RATE and its (phone, start, end) list."""

    audio: np.ndarray
    phones: list[tuple[str, float, float]]
    text: str
    voice: Voice

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / SAMPLE_RATE


# --------------------------------------------------------------------------------------------
# Phone mapping
# --------------------------------------------------------------------------------------------

# espeak-ng English phoneme mnemonics (as reported by phoneme events) -> ARPAbet phones.
# A tuple of several phones splits the phoneme's time evenly; an empty tuple merges the phoneme
# into the one before it.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # pauses
    "_": ("pau",), "_:": ("pau",), "_!": ("pau",), "_|": ("pau",), "_^_": ("pau",),
    "_!_": ("pau",), "_;_": ("pau",),
    # plosives and affricates
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "g": ("g",),
    "t#": ("t",), "t2": ("t",), "t[": ("t",), "d#": ("d",), "d2": ("d",), "k#": ("k",),
    "?": ("t",), "tS": ("ch",), "dZ": ("jh",),
    # fricatives
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "S": ("sh",), "Z": ("zh",), "h": ("hh",), "x": ("hh",), "C": ("hh",), "W": ("w",),
    # nasals, liquids, glides
    "m": ("m",), "n": ("n",), "N": ("ng",), "l": ("l",), "L": ("l",), "l/": ("l",),
    "l#": ("l",), "r": ("r",), "r-": ("r",), "r/": ("r",), "*": ("r",), "R": ("r",),
    "w": ("w",), "w#": ("w",), "j": ("y",), ";": ("y",),
    "n-": ("ah", "n"), "m-": ("ah", "m"), "@L": ("ah", "l"),
    # monophthongs
    "a": ("ae",), "aa": ("aa",), "a#": ("ah",), "A": ("aa",), "A:": ("aa",), "0": ("aa",),
    "O": ("ao",), "O:": ("ao",), "O2": ("ao",), "V": ("ah",), "@": ("ah",), "@2": ("ah",),
    "@5": ("ah",), "@-": ("ah",), "E": ("eh",), "e": ("eh",), "E2": ("eh",), "I": ("ih",),
    "I2": ("ih",), "I#": ("ih",), "IR": ("ih",), "i": ("iy",), "i:": ("iy",), "U": ("uh",),
    "u": ("uw",), "u:": ("uw",), "3": ("er",), "3:": ("er",), "VR": ("er",), "e:": ("ey",),
    "o": ("ow",), "o:": ("ow",), "y": ("uw",), "Y": ("uh",),
    # diphthongs and r-coloured vowels
    "eI": ("ey",), "aI": ("ay",), "aI2": ("ay",), "aI3": ("ay",), "OI": ("oy",),
    "oU": ("ow",), "aU": ("aw",), "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"),
    "e@": ("eh", "r"), "i@": ("ih", "r"), "i@3": ("ih", "r"), "U@": ("uh", "r"),
    "aI@": ("ay", "er"), "aU@": ("aw", "er"), "aI3@": ("ay", "er"),
}

# flite and festival phone names (CMU and radio phone sets) that are not already in PHONES.
ARPABET_ALIASES: dict[str, tuple[str, ...]] = {
    "ax": ("ah",), "axr": ("er",), "ix": ("ih",), "ux": ("uw",), "ah0": ("ah",),
    "el": ("ah", "l"), "em": ("ah", "m"), "en": ("ah", "n"), "nx": ("n",), "dx": ("d",),
    "hv": ("hh",), "q": ("t",), "h#": ("pau",), "sil": ("pau",), "ssil": ("pau",),
    "brth": ("pau",), "#": ("pau",), "_": ("pau",),
}

# festival's phone sets for other languages, used when one of its non-English voices reads
# English text through that language's letter-to-sound rules: the audio and its phones still
# agree, and the corpus gains more real speakers. Symbols are case-sensitive here ("E" and "e",
# "S" and "s" differ); a trailing stress digit or length mark (":") is ignored. Trills and taps
# become "d" (English "r" rounds the lips; a trill does not); a glottal stop merges into the phone
# before it.
_ROMANCE_VOWELS_AND_GLIDES: dict[str, tuple[str, ...]] = {
    "a": ("aa",), "e": ("ey",), "E": ("eh",), "i": ("iy",), "o": ("ow",), "O": ("ao",),
    "u": ("uw",), "j": ("y",), "w": ("w",),
}
FESTIVAL_PHONE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "italian": _ROMANCE_VOWELS_AND_GLIDES | {
        "S": ("sh",), "Z": ("zh",), "ts": ("t", "s"), "tS": ("ch",), "dz": ("d", "z"),
        "dZ": ("jh",), "J": ("n",), "ng": ("ng",), "nf": ("f",), "L": ("l",), "r": ("d",),
        "#": ("pau",),
    },
    "upc_catalan-central": _ROMANCE_VOWELS_AND_GLIDES | {
        "ax": ("ah",), "S": ("sh",), "Z": ("zh",), "J": ("n",), "L": ("l",), "r": ("d",),
        "rr": ("d",), "_": ("pau",), "#": ("pau",),
    },
    "czech": {
        "a": ("aa",), "e": ("eh",), "i": ("ih",), "i:": ("iy",), "o": ("ow",), "u": ("uw",),
        "c": ("t", "s"), "c~": ("ch",), "ch": ("hh",), "d~": ("d",), "t~": ("t",),
        "dz": ("d", "z"), "dz~": ("jh",), "h": ("hh",), "j": ("y",), "n*": ("ng",),
        "n~": ("n",), "r": ("d",), "r~": ("zh",), "r~*": ("sh",), "s~": ("sh",),
        "z~": ("zh",), "_": (), "#": ("pau",),
    },
    "finnish": {
        "a": ("aa",), "e": ("eh",), "i": ("iy",), "o": ("ow",), "u": ("uw",), "y": ("uw",),
        "@": ("ae",), "7": ("uh",), "&": ("ao",), "T": ("th",), "D": ("dh",), "S": ("sh",),
        "Z": ("zh",), "h": ("hh",), "N": ("ng",), "L": ("l",), "r": ("d",), "j": ("y",),
        "##": ("pau",), "#": ("pau",),
    },
}

# festival's voices of other languages that the tables above cover: voice -> its phone set.
FESTIVAL_OTHER_LANGUAGE_VOICES: dict[str, str] = {
    "lp_diphone": "italian", "pc_diphone": "italian", "upc_ca_ona_hts": "upc_catalan-central",
    "suo_fi_lj_diphone": "finnish", "hy_fi_mv_diphone": "finnish", "czech_dita": "czech",
    "czech_ph": "czech",
}


def voice_group(voice: Voice) -> str:
    """The group a voice shares a corpus with: its engine, with festival's other-language voices
    a group of their own."""
    if voice.engine == "festival" and voice.name in FESTIVAL_OTHER_LANGUAGE_VOICES:
        return "festival (other languages)"
    return voice.engine


_CONSONANT_LETTERS = {c: c for c in "bdfgklmnprstvwz"} | {
    "c": "k", "q": "k", "x": "hh", "h": "hh", "j": "y",
}
_VOWEL_CHARS = set("aeiouyAEIOUY@3V0&")

_UNMAPPED: collections.Counter[tuple[str, str]] = collections.Counter()


def unmapped_symbols() -> dict[tuple[str, str], int]:
    """Count of (engine, symbol) pairs seen so far that had no explicit mapping entry."""
    return dict(_UNMAPPED)


def _nearest_phone(symbol: str) -> tuple[str, ...]:
    """Map a symbol with no table entry to the nearest phone class: pause, vowel or consonant."""
    letters = re.sub(r"[^A-Za-z@&0-9]", "", symbol)
    if not letters or symbol.startswith("_"):
        return (PAUSE,)
    if letters[0] in _VOWEL_CHARS:
        return ("ah",)
    return (_CONSONANT_LETTERS.get(letters[0].lower(), "ah"),)


def normalise_phone(symbol: str, engine: str, phone_set: str | None = None) -> tuple[str, ...]:
    """Common phones for one engine symbol; never raises, and counts symbols with no entry.
    ``phone_set`` names the festival phone set when it is one of :data:`FESTIVAL_PHONE_SETS`
    (other languages); otherwise the symbol is read as ARPAbet (festival's radio, flite's CMU)."""
    if engine == "festival" and phone_set in FESTIVAL_PHONE_SETS:
        table = FESTIVAL_PHONE_SETS[phone_set]
        for key in (symbol, re.sub(r"(?<=.)[0-9:]$", "", symbol)):
            if key in table:
                return table[key]
            # a symbol spelt like one of our phones means that phone (p, m, sh …), except
            # "y", a vowel where these languages have it
            if key in PHONES and key != "y":
                return (key,)
        _UNMAPPED[(f"festival ({phone_set})", symbol)] += 1
        return _nearest_phone(symbol.lower())
    if engine == "espeak-ng":
        table = ESPEAK_TO_ARPABET
        key = symbol
    else:
        table = ARPABET_ALIASES
        key = re.sub(r"\d", "", symbol.lower())
        if key in PHONES:
            return (key,)
    if key in table:
        return table[key]
    _UNMAPPED[(engine, symbol)] += 1
    stripped = re.sub(r"[#/:\-\[\]2-9]+$", "", key)
    if stripped in table:
        return table[stripped]
    return _nearest_phone(key)


def _timeline(symbols: list[str], bounds: list[tuple[float, float]], duration: float,
              engine: str, phone_set: str | None = None) -> list[tuple[str, float, float]]:
    """Normalised, clipped, gap-free phone list from engine symbols and their (start, end)."""
    spans: list[list] = []
    for symbol, (start, end) in zip(symbols, bounds, strict=True):
        phones = normalise_phone(symbol, engine, phone_set)
        if not phones:
            if spans:
                spans[-1][2] = max(spans[-1][2], end)
            continue
        step = (end - start) / len(phones)
        spans.extend([p, start + i * step, start + (i + 1) * step] for i, p in enumerate(phones))
    return _tidy(spans, duration)


def _tidy(spans: list[list], duration: float) -> list[tuple[str, float, float]]:
    """Clip spans to the audio, fill the edges with pauses, drop empty ones and merge pauses."""
    out: list[list] = []
    cursor = 0.0
    for phone, start, end in spans:
        start, end = max(start, cursor), min(end, duration)
        if end - start < 1e-4:
            continue
        if start - cursor > 1e-3:
            out.append([PAUSE, cursor, start])
        if out and out[-1][0] == PAUSE and phone == PAUSE:
            out[-1][2] = end
        else:
            out.append([phone, start, end])
        cursor = end
    if duration - cursor > 1e-3:
        if out and out[-1][0] == PAUSE:
            out[-1][2] = duration
        else:
            out.append([PAUSE, cursor, duration])
    return [(p, round(s, 5), round(e, 5)) for p, s, e in out]


def _from_starts(events: list[tuple[str, float]], duration: float,
                 engine: str) -> list[tuple[str, float, float]]:
    """Phone list from (symbol, start) events: each phone lasts until the next one starts."""
    starts = [t for _, t in events]
    ends = starts[1:] + [duration]
    return _timeline([s for s, _ in events], list(zip(starts, ends, strict=True)),
                     duration, engine)


def _from_ends(events: list[tuple[str, float]], duration: float,
               engine: str, phone_set: str | None = None) -> list[tuple[str, float, float]]:
    """Phone list from (symbol, end) events: each phone starts where the previous one ended."""
    ends = [t for _, t in events]
    starts = [0.0] + ends[:-1]
    return _timeline([s for s, _ in events], list(zip(starts, ends, strict=True)),
                     duration, engine, phone_set)


# --------------------------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------------------------

def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Float32 mono samples converted from ``rate`` to SAMPLE_RATE (soxr, or linear fallback)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == SAMPLE_RATE or samples.size == 0:
        return samples
    try:
        import soxr
    except ImportError:
        count = int(round(samples.size * SAMPLE_RATE / rate))
        positions = np.arange(count) * (rate / SAMPLE_RATE)
        return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)
    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def _read_wave(path: Path) -> np.ndarray:
    """A wave file as float32 mono at SAMPLE_RATE."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return _resample(samples.mean(axis=1), rate)


def _run(engine: str, command: list[str], cwd: Path, timeout: float) -> str:
    """Run an engine command and return its stdout; RuntimeError naming the engine on failure."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{engine} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise RuntimeError(f"{engine} could not be started: {exc}") from exc
    if result.returncode != 0:
        raise RuntimeError(f"{engine} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-2000:]}")
    return result.stdout


def _timeout(text: str) -> float:
    """Subprocess time limit for synthesising ``text``."""
    return 30.0 + len(text) / 20.0


def _semitones(pitch: float) -> float:
    """A pitch factor expressed in semitones."""
    return 12.0 * math.log2(max(pitch, 1e-3))


def _shift_pitch(path: Path, pitch: float, engine: str) -> Path:
    """The wave at ``path`` pitch-shifted by ``pitch`` with sox (durations kept); same path
    without sox or when the factor is 1."""
    if abs(pitch - 1.0) < 1e-3 or shutil.which("sox") is None:
        return path
    shifted = path.with_name(path.stem + "_pitch.wav")
    cents = f"{100.0 * _semitones(pitch):.1f}"
    _run(f"{engine} (sox)", ["sox", str(path), str(shifted), "pitch", cents], path.parent, 60)
    return shifted


def _check_text(text: str) -> str:
    """The text on one line; ValueError when it has nothing to say."""
    line = " ".join(text.split())
    if not line:
        raise ValueError("text is empty")
    return line


def _check_name(name: str, engine: str) -> str:
    """The voice name when it is a plain identifier; ValueError otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9_.+\-]+", name):
        raise ValueError(f"invalid {engine} voice name: {name!r}")
    return name


# --------------------------------------------------------------------------------------------
# espeak-ng (ctypes)
# --------------------------------------------------------------------------------------------

_ESPEAK_RATE_NORMAL = 175
_ESPEAK_RATE_RANGE = (80, 450)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_POS_CHARACTER = 1
_CHARS_AUTO = 0

# Base English voices and the variants listed for each (a spread of male and female variants).
ESPEAK_VOICES: dict[str, tuple[str, ...]] = {
    "en-us": ("", "+f3", "+m3", "+f1"),
    "en-gb": ("", "+f2", "+m2"),
    "en-gb-x-rp": ("", "+f4", "+m4"),
    "en-gb-scotland": ("", "+f5"),
    "en-029": ("", "+m5"),
    "en-gb-x-gbclan": ("", "+m6"),
    "en-gb-x-gbcwmd": ("", "+f1"),
    "en-us-nyc": ("", "+f2", "+m7"),
}

# Language tags that espeak-ng only knows under another voice name.
ESPEAK_ALIASES = {"en-gb": "en", "en-uk": "en"}


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h; ``id`` holds the phoneme name for phoneme events."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


class _Espeak:
    """The espeak-ng library in synchronous mode, one synthesis at a time."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[str, float]] = []
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                          _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if self.rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self.callback = _SYNTH_CALLBACK(self._receive)
        lib.espeak_SetSynthCallback(self.callback)
        data = ctypes.c_char_p()
        lib.espeak_Info(ctypes.byref(data))
        self.data_path = Path(data.value.decode()) if data.value else None

    def _receive(self, wav, count, events) -> int:
        """Synth callback: keep the audio chunk and every phoneme event."""
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id).split(b"\0")[0].decode("utf-8", "replace")
                self.events.append((name, event.audio_position / 1000.0))
            index += 1
        return 0

    def select(self, name: str) -> bool:
        """Select a voice by name (``base`` or ``base+variant``); False when espeak-ng refuses."""
        base, plus, variant = name.partition("+")
        for candidate in (base, ESPEAK_ALIASES.get(base)):
            if not candidate:
                continue
            if self.lib.espeak_SetVoiceByName((candidate + plus + variant).encode()) == 0:
                return True
        return False

    def has_voice(self, name: str) -> bool:
        """Whether espeak-ng accepts the voice name and its variant file exists."""
        base, _, variant = name.partition("+")
        if variant and self.data_path is not None:
            if not (self.data_path / "voices" / "!v" / variant).is_file():
                return False
        with self.lock:
            return self.select(base)

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """Samples at the library rate (int16 scaled to float) and (phoneme, start_s) events."""
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            if not self.select(voice.name):
                raise RuntimeError(f"espeak-ng has no voice {voice.name!r}")
            low, high = _ESPEAK_RATE_RANGE
            rate = int(round(min(max(_ESPEAK_RATE_NORMAL * voice.rate, low), high)))
            pitch = int(round(min(max(50 + 50 * math.log2(max(voice.pitch, 1e-3)), 0), 99)))
            self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            self.chunks, self.events = [], []
            status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_AUTO,
                                           None, None)
            self.lib.espeak_Synchronize()
            chunks, events = self.chunks, self.events
            self.chunks, self.events = [], []
        if status != 0:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return samples.astype(np.float32) / 32768.0, events


@lru_cache(maxsize=1)
def _espeak() -> _Espeak | None:
    """The shared espeak-ng library wrapper, or None when the library is not installed."""
    for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            return _Espeak(ctypes.CDLL(name))
        except (OSError, RuntimeError, AttributeError):
            continue
    return None


def _espeak_voices() -> list[Voice]:
    """Installed English espeak-ng voices with their variants."""
    engine = _espeak()
    names = [base + variant for base, variants in ESPEAK_VOICES.items() for variant in variants]
    return [Voice("espeak-ng", name) for name in names if engine and engine.has_voice(name)]


def _espeak_synthesize(text: str, voice: Voice) -> Utterance:
    """Synthesise with the espeak-ng library; timings come from its phoneme events."""
    engine = _espeak()
    if engine is None:
        raise RuntimeError("espeak-ng library (libespeak-ng.so.1) is not installed")
    samples, events = engine.synthesize(text, voice)
    duration = len(samples) / engine.rate
    phones = _from_starts(events, duration, "espeak-ng")
    audio = _resample(samples, engine.rate)
    return Utterance(audio, _fit(phones, len(audio) / SAMPLE_RATE), text, voice)


def _fit(phones: list[tuple[str, float, float]], duration: float
         ) -> list[tuple[str, float, float]]:
    """The phone list with its last end moved to ``duration`` (resampling rounds the length)."""
    if not phones:
        return [(PAUSE, 0.0, round(duration, 5))] if duration > 0 else []
    *head, (phone, start, _) = phones
    return [*head, (phone, start, round(duration, 5))]


# --------------------------------------------------------------------------------------------
# flite (command line)
# --------------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"(\S+?):(-?\d+(?:\.\d+)?)")
# Limited-domain flite voices (talking clocks) that cannot speak general text.
_FLITE_SKIP = re.compile(r".*_time$")


def _flite_voices() -> list[Voice]:
    """flite's built-in general-purpose voices."""
    if shutil.which("flite") is None:
        return []
    with tempfile.TemporaryDirectory(prefix="flite_") as tmp:
        listing = _run("flite", ["flite", "-lv"], Path(tmp), 30)
    names = listing.split(":", 1)[-1].split()
    names = [n for n in names if not _FLITE_SKIP.match(n)]
    # kal is the 8 kHz copy of the kal16 speaker; keep only the 16 kHz one.
    if "kal16" in names and "kal" in names:
        names.remove("kal")
    return [Voice("flite", name) for name in names]


def _flite_synthesize(text: str, voice: Voice) -> Utterance:
    """Synthesise one utterance with flite; ``-psdur`` prints each segment's end time."""
    name = _check_name(voice.name, "flite")
    with tempfile.TemporaryDirectory(prefix="flite_") as tmp:
        folder = Path(tmp)
        wave = folder / "speech.wav"
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={1.0 / voice.rate:.4f}",
                   "-psdur", "-t", text, "-o", str(wave)]
        audio, output = _run_to_wave("flite", command, wave, text, voice)
    events = _offset_restarts([(s, float(t)) for s, t in _SEGMENT.findall(output)])
    return _utterance_from_ends("flite", events, output, audio, text, voice)


def _run_to_wave(engine: str, command: list[str], wave: Path, text: str, voice: Voice
                 ) -> tuple[np.ndarray, str]:
    """Run a synthesiser that writes ``wave``: (its audio at the voice's pitch, its output)."""
    output = _run(engine, command, wave.parent, _timeout(text))
    if not wave.is_file():
        raise RuntimeError(f"{engine} wrote no audio for voice {voice.name!r}: "
                           f"{output[-500:]!r}")
    return _read_wave(_shift_pitch(wave, voice.pitch, engine)), output


def _utterance_from_ends(engine: str, events: list[tuple[str, float]], output: str,
                         audio: np.ndarray, text: str, voice: Voice,
                         phone_set: str | None = None) -> Utterance:
    """The utterance from a synthesiser's (symbol, end time) events."""
    if not events:
        raise RuntimeError(f"{engine} printed no segments for voice {voice.name!r}: "
                           f"{output[-500:]!r}")
    duration = len(audio) / SAMPLE_RATE
    phones = _from_ends(events, duration, engine, phone_set)
    return Utterance(audio, _fit(phones, duration), text, voice)


def _offset_restarts(events: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """End times made cumulative where a new utterance restarts the clock at zero."""
    out, offset, last = [], 0.0, 0.0
    for symbol, end in events:
        if end + offset < last - 1e-6:
            offset = last
        last = end + offset
        out.append((symbol, last))
    return out


# --------------------------------------------------------------------------------------------
# festival (Scheme script)
# --------------------------------------------------------------------------------------------

_FESTIVAL_SCRIPT = """\
(voice_{name})
(Parameter.set 'Duration_Stretch {stretch:.4f})
(if (equal? (Parameter.get 'Synth_Method) 'HTS)
    (set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f})))))
(set! utt (Utterance Text "{text}"))
(utt.synth utt)
(utt.save.wave utt "{wave}" 'riff)
(format t "PHONESET %s\\n" (car (cdr (car (PhoneSet.description '(name))))))
(mapcar (lambda (s) (format t "SEG %s %f\\n" (item.name s) (item.feat s "end")))
        (utt.relation.items utt 'Segment))
"""


def _scheme_string(text: str) -> str:
    """Text escaped for a Scheme string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _festival_voices() -> list[Voice]:
    """Installed festival voices, from its voice-locations list."""
    if shutil.which("festival") is None:
        return []
    with tempfile.TemporaryDirectory(prefix="festival_") as tmp:
        folder = Path(tmp)
        script = folder / "list.scm"
        script.write_text('(mapcar (lambda (v) (format t "VOICE %s\\n" (car v))) '
                          "voice-locations)\n")
        output = _run("festival", ["festival", "--batch", str(script)], folder, 60)
    names = re.findall(r"^VOICE (\S+)$", output, flags=re.M)
    return [Voice("festival", name) for name in names]


def _festival_synthesize(text: str, voice: Voice) -> Utterance:
    """Synthesise with festival; the script prints every Segment with its end time."""
    name = _check_name(voice.name, "festival")
    with tempfile.TemporaryDirectory(prefix="festival_") as tmp:
        folder = Path(tmp)
        wave = folder / "speech.wav"
        script = folder / "synth.scm"
        script.write_text(_FESTIVAL_SCRIPT.format(
            name=name, stretch=1.0 / voice.rate, rate=voice.rate, text=_scheme_string(text),
            wave=wave.as_posix()))
        audio, output = _run_to_wave("festival", ["festival", "--batch", str(script)], wave,
                                     text, voice)
    events = [(s, float(t)) for s, t in re.findall(r"^SEG (\S+) (\S+)$", output, flags=re.M)]
    phone_set = re.search(r"^PHONESET (\S+)$", output, flags=re.M)
    return _utterance_from_ends("festival", events, output, audio, text, voice,
                                phone_set.group(1) if phone_set else None)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

_VOICE_LISTERS = {"espeak-ng": _espeak_voices, "flite": _flite_voices,
                  "festival": _festival_voices}
_SYNTHESISERS = {"espeak-ng": _espeak_synthesize, "flite": _flite_synthesize,
                 "festival": _festival_synthesize}


def available_engines() -> set[str]:
    """Engines installed on this system that can give phone timings."""
    found = set()
    if _espeak() is not None:
        found.add("espeak-ng")
    for engine in ("flite", "festival"):
        if shutil.which(engine) is not None:
            found.add(engine)
    return found


@cache
def _cached_voices(engine: str) -> tuple[Voice, ...]:
    """The voice list of one engine, computed once per process."""
    return tuple(_VOICE_LISTERS[engine]())


def voices(engine: str) -> list[Voice]:
    """Distinct installed voices of ``engine`` (empty when the engine is not installed)."""
    if engine not in _VOICE_LISTERS:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine not in available_engines():
        return []
    return list(_cached_voices(engine))


def synthesize(text: str, voice: Voice) -> Utterance:
    """Speak ``text`` with ``voice``: 16 kHz float32 audio plus normalised phone timings."""
    if voice.engine not in _SYNTHESISERS:
        raise ValueError(f"unknown engine {voice.engine!r}; expected one of {', '.join(ENGINES)}")
    if voice.rate <= 0 or voice.pitch <= 0:
        raise ValueError("voice rate and pitch must be positive")
    if voice.engine not in available_engines():
        raise RuntimeError(f"{voice.engine} is not installed")
    utterance = _SYNTHESISERS[voice.engine](_check_text(text), voice)
    utterance.text = text
    return utterance


def phone_names() -> list[str]:
    """The common phone set, sorted."""
    return sorted(PHONES)
