# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE as ONNX graphs, authored from the model's config when the model is loaded.

No graph file ships and none is exported: :mod:`server.graphs.emote` writes the four graphs a
config needs (the first wav2vec2 convolution's statistics, the convolutional feature encoder,
the rest of the audio encoder, and the condition-dependent decoder) with
:mod:`server.graphs.onnx_proto`, standard library only. Their weights are not in the graphs:
each is declared by its official checkpoint name and shape and bound when the ONNX Runtime
session is made (``SessionOptions.add_initializer``), straight from the NumPy arrays
the checkpoint reader produced. So every model our torch modules can run (the official EMOTE v2
release, the demo model, any bundle a user trains) runs here too, without torch and without
the ``onnx`` package.
"""
