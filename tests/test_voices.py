# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline speech synthesis with phone timings: phone mapping, timing plausibility, rate, voices.

Engine tests are skipped when that engine is not installed (espeak-ng, flite, festival).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from server.demo import voices as tts

SENTENCE = "Bob bought a map and a blue pie."
FOUND = tts.available_engines()


def _engines():
    """One parameter per engine, skipped when that engine is not installed."""
    return [
        pytest.param(engine, marks=pytest.mark.skipif(engine not in FOUND,
                                                      reason=f"{engine} not installed"))
        for engine in tts.ENGINES
    ]


def _first_voice(engine: str) -> tts.Voice:
    """The first listed English voice of an engine."""
    listed = [v for v in tts.voices(engine) if v.name not in tts.FESTIVAL_OTHER_LANGUAGE_VOICES]
    assert listed, f"{engine} lists no English voices"
    return listed[0]


@pytest.fixture(scope="module")
def sentences():
    """The test sentence spoken once per installed engine, cached for the module."""
    return {engine: tts.synthesize(SENTENCE, _first_voice(engine)) for engine in FOUND}


def _rms(utterance: tts.Utterance, spans) -> float:
    """RMS of the audio inside the given (phone, start, end) spans."""
    parts = [utterance.audio[int(s * tts.SAMPLE_RATE):int(e * tts.SAMPLE_RATE)]
             for _, s, e in spans]
    samples = np.concatenate(parts)
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _check_timeline(utterance: tts.Utterance) -> None:
    """Phones are in the common set, ordered, non-empty and inside the audio."""
    assert utterance.phones
    previous_end = 0.0
    for phone, start, end in utterance.phones:
        assert phone in tts.PHONES, phone
        assert start >= previous_end - 1e-6
        assert end > start
        previous_end = end
    assert previous_end <= utterance.duration + 1e-3


# ---------------------------------------------------------------- mapping (no engine needed)

def test_mapping_tables_only_produce_common_phones():
    for table in (tts.ESPEAK_TO_ARPABET, tts.ARPABET_ALIASES):
        for symbol, phones in table.items():
            assert set(phones) <= tts.PHONES, symbol


def test_other_language_tables_only_produce_common_phones():
    assert set(tts.FESTIVAL_OTHER_LANGUAGE_VOICES.values()) <= set(tts.FESTIVAL_PHONE_SETS)
    for name, table in tts.FESTIVAL_PHONE_SETS.items():
        for symbol, phones in table.items():
            assert set(phones) <= tts.PHONES, (name, symbol)


def test_other_language_symbols_keep_their_case():
    """In these phone sets "E"/"e", "S"/"s" and "y" mean other sounds than in ARPAbet."""
    assert tts.normalise_phone("E1", "festival", "italian") == ("eh",)
    assert tts.normalise_phone("e1", "festival", "italian") == ("ey",)
    assert tts.normalise_phone("S", "festival", "finnish") == ("sh",)
    assert tts.normalise_phone("s", "festival", "finnish") == ("s",)
    assert tts.normalise_phone("y", "festival", "finnish") == ("uw",)
    assert tts.normalise_phone("a:", "festival", "finnish") == ("aa",)
    assert tts.normalise_phone("p:", "festival", "finnish") == ("p",)
    assert tts.normalise_phone("rr", "festival", "upc_catalan-central") == ("d",)
    assert tts.normalise_phone("_", "festival", "czech") == ()
    assert tts.normalise_phone("Q", "festival", "czech") == ("k",)
    assert ("festival (czech)", "Q") in tts.unmapped_symbols()
    # an unknown phone set reads the symbol as ARPAbet, as before
    assert tts.normalise_phone("AY1", "festival", "radio") == ("ay",)


def test_common_phone_set_is_arpabet_plus_pause():
    assert len(tts.PHONES) == 40
    assert "pau" in tts.PHONES
    assert all(p.islower() and p.isalpha() for p in tts.PHONES)


def test_arpabet_names_are_lowercased_and_destressed():
    assert tts.normalise_phone("AY1", "festival") == ("ay",)
    assert tts.normalise_phone("ax", "flite") == ("ah",)
    assert tts.normalise_phone("el", "festival") == ("ah", "l")
    assert tts.normalise_phone("h#", "festival") == ("pau",)


def test_unknown_symbols_map_to_a_class_and_are_reported():
    odd = {"espeak-ng": ["Q#", "_odd", "%%", "ø:"], "flite": ["zz9", "@@"]}
    for engine, symbols in odd.items():
        for symbol in symbols:
            phones = tts.normalise_phone(symbol, engine)
            assert phones and set(phones) <= tts.PHONES
            assert (engine, symbol) in tts.unmapped_symbols()


def test_timeline_fills_edges_clips_and_merges_pauses():
    events = [("pau", 0.2), ("b", 0.3), ("aa", 0.5), ("pau", 0.6), ("_", 0.7), ("p", 0.9),
              ("ay", 1.4)]
    phones = tts._from_ends(events, 1.2, "festival")
    assert phones[0] == ("pau", 0.0, 0.2)
    assert [p for p, _, _ in phones] == ["pau", "b", "aa", "pau", "p", "ay"]
    assert phones[-1][2] == pytest.approx(1.2)

    starts = [("b", 0.05), ("aI@", 0.1), ("_:", 0.3)]
    phones = tts._from_starts(starts, 0.5, "espeak-ng")
    assert [p for p, _, _ in phones] == ["pau", "b", "ay", "er", "pau"]
    assert phones[2][2] == pytest.approx(0.2)


def test_unknown_engine_is_rejected():
    with pytest.raises(ValueError, match="unknown engine 'nonesuch'"):
        tts.voices("nonesuch")
    with pytest.raises(ValueError, match="unknown engine 'nonesuch'"):
        tts.synthesize("hello", tts.Voice("nonesuch", "x"))


# ---------------------------------------------------------------- engines

@pytest.mark.parametrize("engine", _engines())
def test_sentence_audio_and_phones(engine, sentences):
    utterance = sentences[engine]
    assert utterance.audio.dtype == np.float32
    assert utterance.audio.ndim == 1
    assert 1.0 < utterance.duration < 5.0
    assert np.abs(utterance.audio).max() > 0.05
    _check_timeline(utterance)
    names = {p for p, _, _ in utterance.phones}
    assert {"p", "b", "m", "uw", "ay"} <= names


@pytest.mark.parametrize("engine", _engines())
def test_pauses_are_quiet_and_vowels_loud(engine, sentences):
    utterance = sentences[engine]
    phones = utterance.phones
    edges = [span for span in (phones[0], phones[-1]) if span[0] == "pau"]
    assert edges, "utterance neither starts nor ends with a pause"
    assert sum(e - s for _, s, e in edges) >= 0.005
    vowels = [span for span in phones if span[0] in tts.VOWELS]
    assert _rms(utterance, vowels) > 4 * _rms(utterance, edges)


@pytest.mark.parametrize("engine", _engines())
def test_faster_rate_gives_shorter_speech(engine, sentences):
    normal = sentences[engine]
    fast = tts.synthesize(SENTENCE, tts.Voice(engine, normal.voice.name, rate=1.5))
    _check_timeline(fast)
    assert fast.duration < 0.8 * normal.duration
    assert fast.phones[-1][2] < 0.8 * normal.phones[-1][2] + 0.05


@pytest.mark.parametrize("engine", _engines())
def test_pitch_keeps_timing(engine, sentences):
    if engine != "espeak-ng" and shutil.which("sox") is None:
        pytest.skip("pitch shifting for this engine needs sox")
    normal = sentences[engine]
    high = tts.synthesize(SENTENCE, tts.Voice(engine, normal.voice.name, pitch=1.3))
    _check_timeline(high)
    assert high.duration == pytest.approx(normal.duration, rel=0.05)
    assert not np.array_equal(high.audio[: len(normal.audio)], normal.audio[: len(high.audio)])


@pytest.mark.parametrize("engine", _engines())
def test_several_sentences_keep_one_timeline(engine):
    utterance = tts.synthesize("Hello there. How are you? Fine, thanks.", _first_voice(engine))
    _check_timeline(utterance)
    assert utterance.phones[-1][2] == pytest.approx(utterance.duration, abs=1e-3)
    spoken = [p for p, _, _ in utterance.phones if p != "pau"]
    assert spoken[-2:] == ["k", "s"]


@pytest.mark.parametrize("engine", _engines())
def test_every_listed_voice_speaks(engine):
    listed = tts.voices(engine)
    assert len(listed) == len(set(listed))
    for voice in listed:
        utterance = tts.synthesize("Hello world.", voice)
        assert utterance.duration > 0.3, voice
        _check_timeline(utterance)
        assert any(p in tts.VOWELS for p, _, _ in utterance.phones), voice


def test_espeak_lists_english_variants():
    if "espeak-ng" not in FOUND:
        pytest.skip("espeak-ng not installed")
    names = {v.name for v in tts.voices("espeak-ng")}
    assert {"en-us", "en-gb"} <= names
    assert any("+f" in n for n in names) and any("+m" in n for n in names)


def _festival_phone_set(voice: str) -> tuple[str, list[str]]:
    """(phone set name, its symbols) as festival describes them for ``voice``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "phones.scm"
        script.write_text(
            f"(voice_{voice})\n"
            "(format t \"NAME %s\\n\" (car (cdr (car (PhoneSet.description '(name))))))\n"
            "(mapcar (lambda (p) (format t \"PHONE %s\\n\" (car p)))\n"
            "        (car (cdr (car (PhoneSet.description '(phones))))))\n")
        output = tts._run("festival", ["festival", "--batch", str(script)], Path(tmp), 60)
    return (re.search(r"^NAME (\S+)$", output, flags=re.M).group(1),
            re.findall(r"^PHONE (\S+)$", output, flags=re.M))


OTHER_LANGUAGE_VOICES = [
    pytest.param(name, marks=pytest.mark.skipif(
        "festival" not in FOUND or tts.Voice("festival", name) not in tts.voices("festival"),
        reason=f"festival voice {name} not installed"))
    for name in tts.FESTIVAL_OTHER_LANGUAGE_VOICES]


@pytest.mark.parametrize("name", OTHER_LANGUAGE_VOICES)
def test_other_language_voices_are_fully_mapped(name):
    """Every phone of the voice's own phone set has a table entry (none falls back to a class),
    and the voice speaks the English test sentence with lip closures and a valid timeline."""
    phone_set, symbols = _festival_phone_set(name)
    assert phone_set == tts.FESTIVAL_OTHER_LANGUAGE_VOICES[name]
    assert len(symbols) > 25
    before = tts.unmapped_symbols()
    for symbol in symbols:
        assert set(tts.normalise_phone(symbol, "festival", phone_set)) <= tts.PHONES
    assert tts.unmapped_symbols() == before, f"unmapped {phone_set} phones"
    utterance = tts.synthesize(SENTENCE, tts.Voice("festival", name, rate=1.2))
    _check_timeline(utterance)
    assert {"p", "b", "m"} <= {p for p, _, _ in utterance.phones}
    assert tts.unmapped_symbols() == before
