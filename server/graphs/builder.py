# SPDX-License-Identifier: GPL-3.0-or-later
"""A small builder for ONNX graphs: named weights given with every run, weights and constants
stored in the graph, operators, and the serialised model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import onnx_proto as proto


@dataclass
class Graph:
    """A serialised ONNX model, the weights it expects with every run (graph inputs of fixed
    shape, by name), its other inputs and outputs, and the weights stored in it."""

    name: str
    model: bytes
    weights: dict[str, tuple[int, ...]]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # weights stored in the model itself


class GraphBuilder:
    """Collects nodes; every method returns the name of the value it makes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[proto.Node] = []
        self._inputs: list[bytes] = []
        self._input_names: list[str] = []
        self._outputs: list[bytes] = []
        self._output_names: list[str] = []
        self._initializers: list[bytes] = []
        self._weights: dict[str, tuple[int, ...]] = {}
        self._constants: dict[tuple, str] = {}
        self._stored: list[str] = []
        self._ids = itertools.count()

    def _fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def input(self, name: str, dtype: type, shape: Sequence[int | str]) -> str:
        self._inputs.append(proto.value_info(name, proto.tensor_type(dtype), shape))
        self._input_names.append(name)
        return name

    def output(self, value: str, name: str, shape: Sequence[int | str],
               dtype: type = np.float32) -> str:
        self.op("Identity", value, name=name)
        self._outputs.append(proto.value_info(name, proto.tensor_type(dtype), shape))
        self._output_names.append(name)
        return name

    def weight(self, name: str, shape: Sequence[int]) -> str:
        """A float32 weight given with every run under ``name``: a graph input of fixed shape,
        so the runtime computes from the caller's array in place."""
        shape = tuple(int(d) for d in shape)
        if name in self._stored:
            raise ValueError(f"weight {name} given twice")
        if name not in self._weights:
            self._weights[name] = shape
            self._inputs.append(proto.value_info(name, proto.FLOAT, shape))
        elif self._weights[name] != shape:
            raise ValueError(f"weight {name} declared with shapes {self._weights[name]} and "
                             f"{shape}")
        return name

    def stored(self, name: str, array: np.ndarray) -> str:
        """A weight stored in the graph under ``name``: a constant to the runtime, which may
        then lay it out for its fastest kernels (the CNN's convolutions)."""
        if name in self._weights or name in self._stored:
            raise ValueError(f"weight {name} given twice")
        self._stored.append(name)
        self._initializers.append(proto.tensor(name, np.asarray(array, np.float32)))
        return name

    def const(self, value: float | int | Sequence | np.ndarray, dtype: type = np.float32
              ) -> str:
        """A constant stored in the graph (shapes, axes, scalars)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = self._fresh("const")
            self._initializers.append(proto.tensor(name, array))
            self._constants[key] = name
        return self._constants[key]

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant (axes, shapes, pads)."""
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None,
           domain: str = "", **attributes: object) -> str:
        """Add a node (of operator set ``domain``, "" for the standard one); returns its
        output (or the first of ``outputs``, see :meth:`op_n`)."""
        return self.op_n(op_type, *inputs, outputs=outputs, name=name, domain=domain,
                         **attributes)[0]

    def op_n(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None,
             domain: str = "", **attributes: object) -> list[str]:
        names = [name] if name is not None and outputs == 1 else [
            self._fresh(op_type.lower()) for _ in range(outputs)]
        self._nodes.append(proto.Node(op_type, list(inputs), names, attributes, domain=domain))
        return names

    def build(self) -> Graph:
        model = proto.model(self._nodes, self._inputs, self._outputs, self._initializers,
                            self.name)
        return Graph(self.name, model, dict(self._weights), list(self._input_names),
                     list(self._output_names), list(self._stored))
