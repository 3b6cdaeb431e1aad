"""Run one ONNX operator with ``onnx.reference.ReferenceEvaluator``, an independent oracle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

OPSET = 21


def run_onnx_node(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    *,
    outputs: int = 1,
    opset: int = OPSET,
    **attributes: object,
) -> list[np.ndarray]:
    """Evaluate ``op_type`` on ``inputs`` (None skips an optional input) and return its outputs.

    Attributes with None values are left out, so callers can pass optional ones unconditionally.
    """
    names = [f"in{i}" if array is not None else "" for i, array in enumerate(inputs)]
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(
        op_type, names, out_names, **{k: v for k, v in attributes.items() if v is not None}
    )

    graph_inputs = []
    feeds = {}
    for name, array in zip(names, inputs):
        if array is None:
            continue
        array = np.asarray(array)
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, array.shape))
        feeds[name] = array
    graph_outputs = [
        helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in out_names
    ]
    graph = helper.make_graph([node], "single_node", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    return list(ReferenceEvaluator(model).run(None, feeds))


__all__ = ["run_onnx_node"]
