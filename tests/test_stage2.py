# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 2: the perceptual networks and their weight files, the emotion-content exchange, and a
training step through the renderer."""

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from server.checkpoints import ModelFolderError  # noqa: E402
from server.flame import load_flame_file  # noqa: E402
from server.models.emote import EmoteModel  # noqa: E402
from server.models.flint import FlintConfig  # noqa: E402
from server.train.data import SequenceWindows  # noqa: E402
from server.train.geometry import FlameVertices  # noqa: E402
from server.train.modules import (  # noqa: E402
    EmoteStage2,
    derangement,
    exchange_conditions,
    exchange_references,
)
from server.train.perceptual import (  # noqa: E402
    EmotionResNet50,
    LipReadingFrontend,
    VideoEmotion,
    VideoEmotionClassifier,
    load_emotion_cnn,
    load_lip_reader,
    load_video_emotion,
)
from server.train.renderer import FixedViewRenderer  # noqa: E402
from tests.builders import tiny_config, write_synthetic_flame, write_training_dataset  # noqa: E402


def test_derangement_has_no_fixed_points():
    assert derangement(2).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    for n in range(3, 10):
        for _ in range(20):
            perm = derangement(n, generator)
            assert sorted(perm.tolist()) == list(range(n))
            assert not (perm == torch.arange(n)).any()


def test_exchange_keeps_style_and_borrows_emotion_and_intensity():
    condition = torch.zeros(3, 43)
    for i, (emotion, intensity, style) in enumerate([(1, 0, 0), (2, 1, 5), (6, 2, 31)]):
        condition[i, [emotion, 8 + intensity, 11 + style]] = 1
    perm = torch.tensor([2, 0, 1])
    exchanged = exchange_conditions(condition, perm)
    assert exchanged[0, :11].tolist() == condition[2, :11].tolist()
    assert exchanged[0, 11:].tolist() == condition[0, 11:].tolist()


def test_references_pair_the_exchanged_half_correctly():
    """Features coded by sample index: lips against the sample itself, emotion against the
    lender."""
    lips = torch.arange(4.0)[:, None, None].expand(4, 5, 2)
    emotion = torch.arange(4.0)[:, None].expand(4, 3)
    perm = torch.tensor([3, 2, 0, 1])
    lip_ref, emotion_ref = exchange_references(lips, emotion, perm)
    assert lip_ref[4:, 0, 0].tolist() == [0, 1, 2, 3]
    assert emotion_ref[4:, 0].tolist() == [3, 2, 0, 1]
    assert emotion_ref[:4, 0].tolist() == [0, 1, 2, 3]


def test_perceptual_networks_load_their_released_layouts(tmp_path):
    torch.manual_seed(0)
    lip = LipReadingFrontend("prelu")
    torch.save({f"encoder.frontend.{k}": v for k, v in lip.state_dict().items()}
               | {"decoder.embed.0.weight": torch.zeros(3)}, tmp_path / "model.pth")
    loaded = load_lip_reader(tmp_path / "model.pth")
    assert isinstance(loaded.frontend3D[2], torch.nn.PReLU)
    crops = torch.rand(1, 6, 1, 96, 96)
    assert torch.equal(loaded(crops), lip.eval()(crops))
    assert loaded(crops).shape == (1, 6, 512)

    emotion = EmotionResNet50()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in emotion.backbone.state_dict()
                               .items()} | {f"linear.{k}": v for k, v in
                                            emotion.linear.state_dict().items()}},
               tmp_path / "emo.ckpt")
    assert load_emotion_cnn(tmp_path / "emo.ckpt")(torch.rand(1, 3, 224, 224)).shape == (1, 2048)

    video = VideoEmotionClassifier()
    torch.save({"state_dict": video.state_dict()}, tmp_path / "video.ckpt")
    pooled = load_video_emotion(tmp_path / "video.ckpt")(torch.rand(2, 7, 2048))
    assert pooled.shape == (2, 256) and pooled.abs().max() <= 1
    broken = {k.replace("pooler.dense", "pooler.linear"): v for k, v in video.state_dict()
              .items()}
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(ModelFolderError, match="pooler.dense.weight"):
        load_video_emotion(tmp_path / "broken.ckpt")


class TinyFrames(torch.nn.Module):
    """A stand-in for the 2048-d frame emotion network (random, small)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 7, stride=8)
        self.proj = torch.nn.Linear(8, 2048)

    def forward(self, images):
        return self.proj(self.conv(images).mean(dim=(2, 3)))


def test_stage2_step_trains_the_regressor_only(tmp_path):
    torch.manual_seed(0)
    write_synthetic_flame(tmp_path / "flame.pkl")
    write_training_dataset(tmp_path / "data", sequences=4)
    flame = load_flame_file(tmp_path / "flame.pkl")
    rng = np.random.default_rng(0)
    landmark_faces = torch.tensor(rng.integers(0, len(flame.faces), 51))
    renderer = FixedViewRenderer(torch.tensor(flame.faces), landmark_faces=landmark_faces,
                                 landmark_barycentrics=torch.full((51, 3), 1 / 3))
    config = tiny_config(styles=["M003", "W009"], dropout=0.0)
    config.flint = FlintConfig(feature_dim=16, latent_dim=16, dim_feedforward=24)
    model = EmoteModel(config)
    stage2 = EmoteStage2(model, FlameVertices(flame), renderer, LipReadingFrontend(),
                         VideoEmotion(TinyFrames(), VideoEmotionClassifier()))
    batch = next(iter(torch.utils.data.DataLoader(
        SequenceWindows(tmp_path / "data", "train", 8), batch_size=3)))
    stage2.train()
    losses = stage2.losses(batch)
    for name in ("vertex", "lip", "lip_exchanged", "emotion", "emotion_exchanged"):
        assert torch.isfinite(losses[name]) and losses[name] >= 0, name
    losses["loss"].backward()
    decoder = model.sequence_decoder
    assert decoder.bert_decoder.layers[0].linear1.weight.grad is not None
    assert all(p.grad is None for p in model.audio_model.parameters())
    assert all(p.grad is None for p in decoder.motion_prior.parameters())
    assert not any(k.startswith("perceptual") for k in stage2.state_dict())


def test_stage2_loss_falls_over_a_few_dozen_steps(tmp_path):
    torch.manual_seed(0)
    write_synthetic_flame(tmp_path / "flame.pkl")
    write_training_dataset(tmp_path / "data", sequences=4)
    flame = load_flame_file(tmp_path / "flame.pkl")
    landmark_faces = torch.tensor(np.random.default_rng(0).integers(0, len(flame.faces), 51))
    renderer = FixedViewRenderer(torch.tensor(flame.faces), landmark_faces=landmark_faces,
                                 landmark_barycentrics=torch.full((51, 3), 1 / 3))
    config = tiny_config(styles=["M003", "W009"], dropout=0.0)
    config.flint = FlintConfig(feature_dim=16, latent_dim=16, dim_feedforward=24)
    stage2 = EmoteStage2(EmoteModel(config), FlameVertices(flame), renderer,
                         LipReadingFrontend(), VideoEmotion(TinyFrames(),
                                                            VideoEmotionClassifier()), lr=2e-3)
    windows = SequenceWindows(tmp_path / "data", "train", 8, windows_per_epoch=2 * 24)
    optimizer = stage2.configure_optimizers()
    stage2.train()
    losses = []
    for batch in torch.utils.data.DataLoader(windows, batch_size=2):
        loss = stage2.losses(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
