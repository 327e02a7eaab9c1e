# SPDX-License-Identifier: GPL-3.0-or-later
"""The few ONNX protobuf messages our graphs need, written with the standard library.

ONNX models are protocol-buffer messages (``onnx.proto``, proto2). We author our graphs at load
time from the model's config, on machines that have ONNX Runtime but not the ``onnx`` package
(Blender's Python), so this module encodes them itself: a message is a sequence of fields, each
a varint key ``(field number << 3) | wire type`` followed by a varint, a fixed 32-bit value or a
length-prefixed byte string. Repeated scalars are written unpacked, which every proto2 parser
accepts. Field numbers are those of ``onnx.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

IR_VERSION = 8  # ONNX 1.10+: every ONNX Runtime since 1.10 reads it
OPSET = 17  # LayerNormalization is an operator from opset 17
MICROSOFT = "com.microsoft"  # ONNX Runtime's operators (MultiHeadAttention), in every CPU build

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64, BOOL, DOUBLE = 1, 2, 3, 6, 7, 9, 11
_NUMPY_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8,
                np.dtype(np.int8): INT8, np.dtype(np.int32): INT32, np.dtype(np.int64): INT64,
                np.dtype(np.bool_): BOOL, np.dtype(np.float64): DOUBLE}

# AttributeProto.AttributeType
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 4, 6, 7

_VARINT, _FIXED32, _BYTES = 0, 5, 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(int(value))


def _bytes(number: int, value: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(value)) + value


def _str(number: int, value: str) -> bytes:
    return _bytes(number, value.encode())


def _float(number: int, value: float) -> bytes:
    return _key(number, _FIXED32) + struct.pack("<f", value)


def tensor_type(dtype: np.dtype | type) -> int:
    return _NUMPY_TYPES[np.dtype(dtype)]


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto holding ``array`` (little-endian raw data)."""
    array = np.ascontiguousarray(array)
    body = b"".join(_int(1, d) for d in array.shape)
    body += _int(2, tensor_type(array.dtype)) + _str(8, name)
    body += _bytes(9, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return body


def value_info(name: str, dtype: int, shape: Sequence[int | str] | None) -> bytes:
    """A ValueInfoProto: a graph input or output with its element type and (symbolic) shape."""
    tensor_type_body = _int(1, dtype)
    if shape is not None:
        dims = b"".join(
            _bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
        tensor_type_body += _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type_body))


def attribute(name: str, value: object) -> bytes:
    """An AttributeProto from a Python value: int, float, str, ndarray, or a list of ints or
    floats."""
    body = _str(1, name)
    if isinstance(value, bool | int | np.integer):
        return body + _int(3, int(value)) + _int(20, _ATTR_INT)
    if isinstance(value, float | np.floating):
        return body + _float(2, float(value)) + _int(20, _ATTR_FLOAT)
    if isinstance(value, str):
        return body + _bytes(4, value.encode()) + _int(20, _ATTR_STRING)
    if isinstance(value, np.ndarray):
        return body + _bytes(5, tensor("", value)) + _int(20, _ATTR_TENSOR)
    values = list(value)  # type: ignore[call-overload]
    if all(isinstance(v, int | np.integer) for v in values):
        return body + b"".join(_int(8, v) for v in values) + _int(20, _ATTR_INTS)
    return body + b"".join(_float(7, v) for v in values) + _int(20, _ATTR_FLOATS)


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, object] = field(default_factory=dict)
    name: str = ""
    domain: str = ""  # "" is the standard operators; ONNX Runtime's own are MICROSOFT

    def encode(self) -> bytes:
        body = b"".join(_str(1, i) for i in self.inputs)
        body += b"".join(_str(2, o) for o in self.outputs)
        body += _str(3, self.name) + _str(4, self.op_type)
        body += b"".join(_bytes(5, attribute(k, v)) for k, v in self.attributes.items())
        return body + (_str(7, self.domain) if self.domain else b"")


def model(nodes: Iterable[Node], inputs: Iterable[bytes], outputs: Iterable[bytes],
          initializers: Iterable[bytes], name: str) -> bytes:
    """A serialised ModelProto (opset :data:`OPSET`, IR :data:`IR_VERSION`; ONNX Runtime's
    operator set, version 1, where a node uses it)."""
    nodes = list(nodes)
    graph = b"".join(_bytes(1, n.encode()) for n in nodes) + _str(2, name)
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, i) for i in inputs)
    graph += b"".join(_bytes(12, o) for o in outputs)
    opsets = _bytes(8, _str(1, "") + _int(2, OPSET))
    if any(n.domain == MICROSOFT for n in nodes):
        opsets += _bytes(8, _str(1, MICROSOFT) + _int(2, 1))
    return _int(1, IR_VERSION) + _str(2, "emote-blender") + _bytes(7, graph) + opsets
