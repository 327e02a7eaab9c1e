# SPDX-License-Identifier: GPL-3.0-or-later
"""Model pieces: the chunked wav2vec2 CNN, FLINT's time scaling, EMOTE's shapes."""

import torch

from server.models.flint import Flint, FlintConfig
from server.models.wav2vec2 import AudioEncoder
from tests.builders import TINY_WAV2VEC2, random_model


def test_chunked_cnn_equals_the_whole_input_pass():
    torch.manual_seed(0)
    encoder = AudioEncoder(TINY_WAV2VEC2).eval()
    for samples in (16_000 * 12 + 123, 16_000 * 31 + 7):
        wave = torch.randn(1, samples)
        with torch.no_grad():
            whole = encoder.model.feature_extractor(wave)
            chunked = encoder.cnn_features(wave)
        assert chunked.shape == whole.shape
        assert (chunked - whole).abs().max() < 1e-5 * whole.abs().max()


def test_cnn_keeps_gradients_when_trainable():
    encoder = AudioEncoder(TINY_WAV2VEC2)
    wave = torch.randn(1, 16_000 * 12)
    encoder.cnn_features(wave).sum().backward()
    assert encoder.model.feature_extractor.conv_layers[0].conv.weight.grad is not None


def test_flint_scales_time_by_eight():
    flint = Flint(FlintConfig(feature_dim=16, latent_dim=16, dim_feedforward=24)).eval()
    motion = torch.randn(2, 64, 103)
    with torch.no_grad():
        mean, logvar = flint.motion_encoder(motion)
        decoded = flint.motion_decoder(mean)
    assert mean.shape == logvar.shape == (2, 8, 16)
    assert decoded.shape == (2, 64, 103)


def test_emote_decode_crops_padding_to_the_clip_length():
    model = random_model()
    with torch.no_grad():
        out = model.decode(torch.randn(1, 77, 16), torch.zeros(1, 77, 43))
    assert out.shape == (1, 77, 103)
