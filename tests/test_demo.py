# SPDX-License-Identifier: GPL-3.0-or-later
"""The built-in demo: procedural head, corpus targets, the committed demo model, the recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.demo import corpus
from server.demo.head import EXPRESSIONS, MOUTH_Y, build_demo_head, write_demo_head
from server.demo.recipe import VOICE_PACKAGES, missing_voices
from server.demo.voices import Voice
from server.flame import FlameModel, load_flame_file
from server.train.geometry import FlameVertices, masked_vertex_mse
from tests.builders import ROOT, run_server


@pytest.fixture(scope="module")
def head():
    return build_demo_head()


def _vertices(head, expression: dict[str, float] | None = None, jaw: float = 0.0) -> np.ndarray:
    coefficients = np.zeros((1, 100))
    for name, value in (expression or {}).items():
        coefficients[0, EXPRESSIONS.index(name)] = value
    return FlameModel(head.flame).vertices(coefficients, np.array([[jaw, 0.0, 0.0]]))[0]


def test_demo_head_has_the_flame_layout_and_is_deterministic(tmp_path, head):
    path = write_demo_head(tmp_path)
    flame = load_flame_file(path, tmp_path / "landmark_embedding.npy")
    n = flame.n_vertices
    assert flame.shapedirs.shape == (n, 3, 400) and flame.posedirs.shape == (n, 3, 36)
    assert flame.j_regressor.shape == (5, n) and flame.weights.shape == (n, 5)
    assert flame.kintree_table[0, 1:].tolist() == [0, 1, 1, 1]
    assert len(flame.landmark_faces) == 51 and flame.faces.max() < n
    np.testing.assert_allclose(flame.weights.sum(1), 1.0, atol=1e-12)
    again = build_demo_head().flame
    np.testing.assert_array_equal(again.v_template, flame.v_template)
    np.testing.assert_array_equal(again.shapedirs, flame.shapedirs)
    # Named components have motion, the rest of the expression space is zero.
    expression = flame.shapedirs[:, :, 300:]
    assert all(np.abs(expression[:, :, k]).max() > 1e-3 for k in range(len(EXPRESSIONS)))
    assert np.abs(expression[:, :, len(EXPRESSIONS):]).max() == 0


def test_the_jaw_opens_the_mouth_and_the_components_do_what_they_say(head):
    upper, lower = head.groups["upper_lip_line"], head.groups["lower_lip_line"]
    centre = np.argsort(np.abs(head.flame.v_template[upper, 0]))[:3]
    rest = _vertices(head)
    assert np.abs(rest[upper[centre]] - rest[lower[centre]]).max() < 1e-7  # closed
    opened = _vertices(head, jaw=0.2)
    gap = opened[upper[centre], 1] - opened[lower[centre], 1]
    assert gap.min() > 0.012  # more than 12 mm between the lips
    skin = head.groups["skin"]
    far = skin[head.flame.v_template[skin, 1] > 0.05]
    np.testing.assert_allclose(opened[far], rest[far], atol=1e-12)  # forehead stays

    template = head.flame.v_template
    corners = skin[(np.abs(np.abs(template[skin, 0]) - 0.024) < 0.003)
                   & (np.abs(template[skin, 1] - MOUTH_Y) < 0.003) & (template[skin, 2] > 0.05)]
    assert (_vertices(head, {"mouth corners up": 1})[corners, 1] - rest[corners, 1]).min() > 1e-3
    assert (_vertices(head, {"mouth corners down": 1})[corners, 1]
            - rest[corners, 1]).max() < -1e-3
    left = corners[template[corners, 0] > 0]
    right = corners[template[corners, 0] < 0]
    contempt = _vertices(head, {"left corner up": 1}) - rest
    assert contempt[left, 1].min() > 1e-3 and np.abs(contempt[right]).max() < 2e-4
    lips = head.groups["lips"]
    rounded = _vertices(head, {"lip rounding": 1})
    assert (rounded[lips, 2] - rest[lips, 2]).mean() > 1e-3  # forward
    assert np.ptp(rounded[corners, 0]) < np.ptp(rest[corners, 0])  # narrower
    brows = skin[(np.abs(template[skin, 1] - 0.05) < 0.004) & (template[skin, 2] > 0.05)]
    assert (_vertices(head, {"brow raise": 1})[brows, 1] - rest[brows, 1]).mean() > 2e-3
    assert (_vertices(head, {"brow lower": 1})[brows, 1] - rest[brows, 1]).mean() < -1e-3


def test_training_vertices_equal_smplx_and_the_loss_counts_every_vertex(head):
    from tests.builders import synthetic_flame

    rng = np.random.default_rng(0)
    for data in (synthetic_flame(), head.flame):
        expression, jaw = rng.normal(0, 1, (6, 100)), rng.normal(0, 0.2, (6, 3))
        reference = FlameModel(data).vertices(expression, jaw)
        ours = FlameVertices(data)(torch.tensor(np.concatenate([expression, jaw], 1))[None])
        np.testing.assert_allclose(ours[0].double().numpy(), reference, atol=1e-6)
    vertices = FlameVertices(head.flame)
    assert len(vertices.moving) < head.flame.n_vertices
    a, b = torch.randn(2, 5, 103), torch.randn(2, 5, 103)
    full = ((vertices(a) - vertices(b)) ** 2).mean()
    assert float(masked_vertex_mse(vertices, a, b)) == pytest.approx(float(full), rel=1e-5)


def test_the_renderer_puts_the_mouth_where_the_landmarks_say(head):
    """The stage-2 renderer on a FLAME-layout head: with the jaw open, the pixel at the centre
    of the inner-lip landmarks shows the mouth cavity (closed: the lips), and the mouth crop
    sees the opening."""
    from server.train.renderer import FixedViewRenderer, mouth_crops, pose_and_project, rasterize

    flame = head.flame
    renderer = FixedViewRenderer(torch.tensor(flame.faces), size=224,
                                 landmark_faces=torch.tensor(flame.landmark_faces),
                                 landmark_barycentrics=torch.tensor(
                                     flame.landmark_barycentrics, dtype=torch.float32))
    motion = torch.zeros(1, 2, 103)
    motion[0, 1, 100] = 0.25
    vertices = FlameVertices(flame)(motion)
    out = renderer(vertices)
    landmarks = out["landmarks"]  # (1, 2, 51, 2): static landmarks 17..67
    inner = landmarks[0, 1, 60 - 17:68 - 17].mean(0)
    pixel = ((inner + 1) * 112).long()
    _, screen = pose_and_project(vertices[0, 1:])
    face, _ = rasterize(screen, renderer.faces, 224)
    assert int(face[0, pixel[1], pixel[0]]) in set(head.mouth_interior_faces.tolist())
    closed_face = rasterize(pose_and_project(vertices[0, :1])[1], renderer.faces, 224)[0]
    assert int(closed_face[0, pixel[1], pixel[0]]) not in set(head.mouth_interior_faces.tolist())
    padded = torch.zeros(1, 2, 68, 2)
    padded[:, :, 17:] = landmarks
    crops = mouth_crops(out["image"], padded)
    assert (crops[0, 1] - crops[0, 0]).abs().mean() > 0.02


def test_articulation_closes_the_lips_on_bilabials_and_opens_on_vowels():
    phones = [("pau", 0.0, 0.2), ("b", 0.2, 0.3), ("aa", 0.3, 0.5), ("m", 0.5, 0.62),
              ("uw", 0.62, 0.8), ("pau", 0.8, 1.2)]
    style = corpus.STYLES[0]
    jaw, lips = corpus.articulation(phones, 30, style, lead=0.0)
    t = (np.arange(30) + 0.5) / 25
    press = lips[:, EXPRESSIONS.index("lip press")]
    in_b = (t > 0.21) & (t < 0.29)
    assert jaw[in_b].max() <= 0.01 and press[in_b].min() >= 0.8
    assert jaw[(t > 0.35) & (t < 0.45)].min() > 0.12
    rounding = lips[:, EXPRESSIONS.index("lip rounding")]
    assert rounding[(t > 0.66) & (t < 0.76)].min() > 0.8
    assert jaw[t > 1.0].max() < 0.03  # back to rest in the pause


def test_frame_phones_label_each_frame_centre():
    phones = [("hh", 0.0, 0.1), ("aa", 0.1, 0.3), ("p", 0.3, 0.38)]
    labels = corpus.frame_phones(phones, 12, offset=0.04)
    names = [corpus.PHONE_SET[i] for i in labels]
    # Frame centres 0.02, 0.06, … s; the phones start 0.04 s into the audio.
    assert names == ["pau", "hh", "hh", "aa", "aa", "aa", "aa", "aa", "p", "p", "pau", "pau"]
    assert labels.dtype == np.int16


def test_the_plan_gives_each_voice_group_an_equal_share():
    from collections import Counter

    train = [Voice("espeak-ng", f"v{i}") for i in range(5)] + [Voice("flite", "kal16")] + [
        Voice("festival", "kal_diphone"), Voice("festival", "lp_diphone"),
        Voice("festival", "czech_ph")]
    specs = corpus.plan(train, [Voice("festival", "slt")], 80, 20, test_sentences=3)
    training = [s for s in specs if s.split in ("train", "val")]
    assert Counter(s.voice.engine for s in training) == {"espeak-ng": 25, "flite": 25,
                                                         "festival": 50}
    assert Counter(s.voice.name for s in training if s.voice.engine == "espeak-ng") == {
        f"v{i}": 5 for i in range(5)}
    # festival's other-language voices share a quarter, not festival's English voice's
    assert Counter(s.voice.name for s in training if s.voice.engine == "festival") == {
        "kal_diphone": 25, "lp_diphone": 13, "czech_ph": 12}
    assert [s.voice.engine for s in specs if s.split == "test"] == ["festival"] * 3
    assert specs == corpus.plan(train, [Voice("festival", "slt")], 80, 20, test_sentences=3)


def test_emotions_intensities_and_styles():
    rng = np.random.default_rng(0)
    mild, _, _ = corpus.emotion_overlay("Happy", 1, 50, rng)
    strong, _, _ = corpus.emotion_overlay("Happy", 3, 50, np.random.default_rng(0))
    corner = EXPRESSIONS.index("mouth corners up")
    assert 0 < mild[:, corner].mean() < 0.6 * strong[:, corner].mean()
    neutral, _, _ = corpus.emotion_overlay("Neutral", 3, 50, rng)
    assert np.abs(neutral).max() == 0
    names = [s.name for s in corpus.STYLES]
    assert len(set(names)) == 32 and names[0] == corpus.DEFAULT_STYLE


def test_the_built_in_demo_model_follows_held_out_speech():
    """The committed demo model on the shipped sentence (a voice and sentence never used in
    training): its jaw follows the articulation targets made from the sentence's phones."""
    from server.animator import Animator
    from server.audio import load_audio
    from server.checkpoints import load_model
    from server.demo.recipe import MODEL_DIR, SENTENCE_WAV

    meta = json.loads(SENTENCE_WAV.with_suffix(".json").read_text())
    clip = load_audio(SENTENCE_WAV)
    animator = Animator(load_model(MODEL_DIR), device="cpu")
    happy = animator.generate(clip, {"emotion": "Happy", "intensity": "strong"})
    sad = animator.generate(clip, {"emotion": "Sad", "intensity": "mild"})
    target, _ = corpus.articulation([tuple(p) for p in meta["phones"]], clip.frames,
                                    corpus.STYLES[0])
    for take in (happy, sad):
        assert np.corrcoef(take.jaw[:, 0], target)[0, 1] > 0.7  # measured 0.81 and 0.80
    corner = EXPRESSIONS.index("mouth corners up")
    brow = EXPRESSIONS.index("brow inner up")
    assert happy.expression[:, corner].mean() > sad.expression[:, corner].mean() + 0.5
    assert sad.expression[:, brow].mean() > happy.expression[:, brow].mean() + 0.3
    recorded = json.loads((MODEL_DIR / "metrics.json").read_text())
    assert recorded["jaw_opening_correlation"] >= 0.6 and recorded["lip_error_ratio"] <= 0.5
    assert min(e["jaw_opening_correlation"]
               for e in recorded["per_emotion_strong"].values()) >= 0.6


def test_generate_without_model_uses_the_demo_model(tmp_path):
    out = tmp_path / "take.npz"
    result = run_server("generate", ROOT / "server" / "demo" / "sentence.wav", "--emotion", "Sad",
                        "-o", out)
    assert result.returncode == 0, result.stderr
    assert "Sad · strong · moderate-neutral-brisk" in result.stdout
    assert np.load(out)["expression"].shape[1] == 100


def test_the_voice_packages_are_listed_alike_everywhere():
    """The recipe's Debian packages, tools/setup_voices.sh (which installs them) and the README's
    retrain instructions name the same voices: a voice added to one list only would leave a new
    machine without it or the README wrong."""
    import re

    script = (ROOT / "tools" / "setup_voices.sh").read_text()
    listed = re.search(r'packages="([^"]*)"', script).group(1).split()
    readme = " ".join((ROOT / "README.md").read_text().split())
    retrain = re.search(r"\*\*Retrain it\*\* with one command \(needs `apt-get install ([^`]*)`",
                        readme).group(1).split()
    recipe = VOICE_PACKAGES.split()
    assert sorted(set(listed) - {"libespeak-ng1", "sox"}) == sorted(recipe)
    assert sorted(set(retrain) - {"sox"}) == sorted(recipe)


needs_voices = pytest.mark.skipif(
    bool(missing_voices()),
    reason=f"the demo recipe needs its voices (apt-get install {VOICE_PACKAGES})")


@needs_voices
def test_the_held_out_voice_and_its_speaker_never_train():
    from server.demo.recipe import FESTIVAL_TRAINING_VOICES, split_voices

    train, held_out = split_voices()
    assert held_out == [Voice("festival", "cmu_us_slt_arctic_hts")]
    assert not any("slt" in v.name for v in train)
    # festival's named voices train (so its front end is not unseen as well), and no others
    assert [v.name for v in train if v.engine == "festival"] == list(FESTIVAL_TRAINING_VOICES)
    assert {v.engine for v in train} == {"espeak-ng", "flite", "festival"}


@needs_voices
def test_a_missing_voice_is_named(monkeypatch):
    from server.demo import voices
    from server.demo.recipe import split_voices

    listed = voices.voices

    def without_ked(engine):
        return [v for v in listed(engine) if v.name != "ked_diphone"]

    monkeypatch.setattr(voices, "voices", without_ked)
    with pytest.raises(ValueError, match="needs festival voice ked_diphone .*festvox-kdlpc16k"):
        split_voices()


@needs_voices
def test_the_recipe_runs_from_one_command(tmp_path):
    """``python -m server demo retrain --quick``: head, corpus, FLINT, stage 1, metrics."""
    result = run_server("demo", "retrain", tmp_path / "work", "--quick", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout[result.stdout.rindex("\n{") + 1:])
    assert metrics["held_out_sequences"] == 2
    assert 0 < metrics["flint_lip_error_mm"] and 0 < metrics["flint_lip_error_ratio"]
    assert metrics["held_out_voice"].startswith("festival:")
    assert set(metrics["per_emotion_strong"]) == set(corpus.EMOTIONS)
    index = json.loads((tmp_path / "work" / "corpus" / "index.json").read_text())
    assert index["phones"] == list(corpus.PHONE_SET)
    first = np.load(tmp_path / "work" / "corpus" / index["sequences"][0]["file"])
    assert len(first["phones"]) == len(first["jaw"])
    assert {corpus.PHONE_SET[i] for i in first["phones"]} > {"pau"}  # speech is labelled
    voices = {e["voice"] for e in index["sequences"] if e["split"] == "train"}
    assert metrics["held_out_voice"] not in voices and "flite:slt" not in voices
    assert (tmp_path / "work" / "stage1" / "bundle" / "model.safetensors").is_file()
