# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE as ONNX graphs, authored from the model's config when the model is loaded.

No graph file ships and none is exported: :mod:`server.graphs.emote` writes the three graphs a
config needs (the convolutional feature encoder, the rest of the audio encoder, and the
condition-dependent decoder) with :mod:`server.graphs.onnx_proto`, standard library only. The
weights are graph inputs of fixed shape, each named by its official checkpoint name and given
with every run straight from the NumPy arrays the checkpoint reader produced, which ONNX
Runtime computes from in place. The one exception is the CNN's convolution weights, stored in
its graph (ONNX Runtime lays constant convolution weights out for its fastest kernels). So
every model our torch modules can run (the official EMOTE v2 release, the demo model, any
bundle a user trains) runs here too, without torch and without the ``onnx`` package.
"""
