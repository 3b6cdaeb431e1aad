"""``Package.weights()`` and ``Package.constexpr_values()`` against coremltools' decompression.

Reference values (see ``_packages``):

* dense weights come from the public ``coremltools.optimize.coreml.decompress_weights``. It
  replaces every ``constexpr_*`` op, in program order, by a ``const`` op named after the op's
  output and holding ``materialized_val_inference()``. The const ops of the returned model's
  MIL program therefore carry each dense weight under its name in the compressed package;
* every constexpr output, masks and chain intermediates included, comes from coremltools'
  ``WeightDecompressor`` pass applied without the pass pipeline that follows in the public API
  (private ``coremltools.models.utils._apply_graph_pass(..., return_pymil_prog=True)``);
* which outputs count as weights comes from coremltools' own program loader: constexpr outputs
  with at least one non-constexpr consumer.

Every decoded weight is compared bit for bit. Tests that only exercise how parameters are
collected and outputs checked replace the decoder registry with a stub.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from sparseblob.runtime import load
from sparseblob.runtime.errors import PackageError, ShapeError, UnknownDtypeError
from sparseblob.verify.compare import assert_bits_equal

from . import _packages
from ._packages import build_package, copy_package, find_op, read_spec, write_spec

REGISTRY = "sparseblob.runtime.decode.registry"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Build (once per session) and return a function from recipe name to package path."""
    return lambda name: build_package(name, tmp_path_factory)


def plain_dtype(array: np.ndarray) -> np.ndarray:
    """Drop coremltools' sub-byte dtype metadata (uint1 masks are uint8 arrays tagged uint1)."""
    array = np.asarray(array)
    return array.view(array.dtype.type) if array.dtype.metadata else array


# --- against coremltools --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_packages.RECIPES))
def test_weights_match_coremltools_bit_for_bit(packages, name):
    pytest.importorskip(REGISTRY)
    path = packages(name)
    expected = _packages.reference_weights(path)

    weights = load(path).weights()

    assert list(weights) == _packages.reference_weight_names(path)
    for key, array in weights.items():
        assert_bits_equal(array, plain_dtype(expected[key]), name=f"{name}: {key}")


@pytest.mark.parametrize("name", sorted(_packages.RECIPES))
def test_constexpr_values_match_coremltools(packages, name):
    pytest.importorskip(REGISTRY)
    path = packages(name)
    expected = _packages.reference_constexpr_values(path)

    values = load(path).constexpr_values()

    assert sorted(values) == sorted(expected)
    for key, array in values.items():
        assert_bits_equal(array, plain_dtype(expected[key]), name=f"{name}: {key}")


def test_joint_weights_leave_out_chain_intermediates(packages):
    pytest.importorskip(REGISTRY)
    package = load(packages("ios18_prune_palettize"))

    weights = package.weights()
    values = package.constexpr_values()

    assert len(values) == 6
    assert len(weights) == 2
    assert set(weights) < set(values)


def test_uncompressed_package_has_no_weights(packages):
    pytest.importorskip(REGISTRY)

    assert load(packages("ios18_plain")).weights() == {}


def test_multifunction_weights_match_single_function_packages(packages, tmp_path_factory):
    pytest.importorskip(REGISTRY)
    package = load(_packages.build_multifunction(tmp_path_factory))

    for function, recipe in [("pruned", "ios18_prune"), ("quantized", "ios18_quantize_uint4_block")]:
        expected = load(packages(recipe)).weights()
        weights = package.weights(function)

        assert list(weights) == list(expected)
        for key, array in weights.items():
            assert_bits_equal(array, expected[key], name=f"{function}: {key}")


# --- parameter collection and output checks, with a stub decoder ---------------------------


class StubRegistry:
    """Stands in for the decoder registry: records each call and returns preset outputs."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.calls = []

    def decode_op(self, op_type, opset, params, *, name, max_elements, dtypes=None):
        self.calls.append(
            {"op_type": op_type, "opset": opset, "params": params, "name": name, "dtypes": dtypes}
        )
        return self.outputs(op_type, name, params)


@pytest.fixture
def stub_registry(monkeypatch):
    """Install a stub registry; call it with a function (op_type, name, params) -> outputs."""

    def install(outputs):
        stub = StubRegistry(outputs)
        module = types.ModuleType(REGISTRY)
        module.decode_op = stub.decode_op
        monkeypatch.setitem(sys.modules, REGISTRY, module)
        return stub

    return install


def declared_zeros(package):
    """Outputs function that returns zeros of each op's declared output types."""
    declared = {op.name: op.outputs for op in package.function().operations if op.is_constexpr}

    def outputs(op_type, name, params):
        return tuple(np.zeros(out.type.shape, out.type.dtype.numpy_dtype) for out in declared[name])

    return outputs


def test_ios16_params_come_from_attributes(packages, stub_registry):
    package = load(packages("ios16_prune"))
    stub = stub_registry(declared_zeros(package))

    package.weights()

    first = stub.calls[0]
    assert first["op_type"] == "constexpr_sparse_to_dense"
    assert first["opset"] == "CoreML6"
    assert first["name"] == "linear_0_weight_0_to_fp16_sparsified"
    assert sorted(first["params"]) == ["mask", "nonzero_data", "shape"]
    assert first["params"]["shape"].tolist() == [64, 128]
    assert first["params"]["mask"].dtype == np.uint8


def test_ios18_params_resolve_named_bindings(packages, stub_registry):
    package = load(packages("ios18_prune_palettize"))
    marker = {}

    def outputs(op_type, name, params):
        produced = declared_zeros(package)(op_type, name, params)
        marker[name] = produced
        return produced

    stub = stub_registry(outputs)

    package.weights()

    lut_call, dense_call = stub.calls[:2]
    assert lut_call["opset"] == "CoreML8"
    assert sorted(lut_call["params"]) == ["indices_mask", "indices_nonzero_data", "lut"]
    assert dense_call["params"]["mask"] is marker[lut_call["name"]][0]
    assert dense_call["params"]["nonzero_data"] is marker[lut_call["name"]][1]


def test_declared_dtypes_reach_the_decoder(packages, stub_registry):
    package = load(packages("ios18_prune_palettize"))
    stub = stub_registry(declared_zeros(package))

    package.weights()

    lut_call, dense_call = stub.calls[:2]
    assert lut_call["dtypes"]["indices_mask"] == "uint1"
    assert lut_call["dtypes"]["lut"] == "fp16"
    assert dense_call["dtypes"]["mask"] == "uint1"


def test_weights_are_outputs_with_non_constexpr_consumers(packages, stub_registry):
    path = packages("ios18_prune_quantize")
    package = load(path)
    stub_registry(declared_zeros(package))

    assert list(package.weights()) == _packages.reference_weight_names(path)
    assert len(package.constexpr_values()) == 6


def test_decoded_dtype_must_match_declared(packages, stub_registry):
    package = load(packages("ios18_prune"))
    stub_registry(lambda op_type, name, params: (np.zeros((64, 128), np.float32),))

    with pytest.raises(
        UnknownDtypeError,
        match=r"op 'linear_0_weight_0_to_fp16_sparsified' \(constexpr_sparse_to_dense\) output "
        r"'linear_0_weight_0_to_fp16_sparsified': decoded dtype is float32, but the output is declared "
        r"tensor<fp16, \[64, 128\]>",
    ):
        package.weights()


def test_decoded_shape_must_match_declared(packages, stub_registry):
    package = load(packages("ios18_prune"))
    stub_registry(lambda op_type, name, params: (np.zeros((128, 64), np.float16),))

    with pytest.raises(ShapeError, match=r"decoded shape is \[128, 64\], but the output is declared tensor<fp16, \[64, 128\]>"):
        package.weights()


def test_decoded_rank_must_match_declared(packages, stub_registry):
    package = load(packages("ios18_prune"))
    stub_registry(lambda op_type, name, params: (np.zeros(64 * 128, np.float16),))

    with pytest.raises(ShapeError, match=r"decoded shape is \[8192\]"):
        package.weights()


def test_decoded_output_count_must_match_declared(packages, stub_registry):
    package = load(packages("ios18_prune"))
    stub_registry(lambda op_type, name, params: (np.zeros((64, 128), np.float16),) * 2)

    with pytest.raises(PackageError, match="decoding gave 2 outputs; the op declares 1"):
        package.weights()


def test_param_bound_to_function_input_is_rejected(packages, stub_registry, tmp_path):
    package_path = copy_package(packages("ios18_prune_palettize"), tmp_path)
    spec = read_spec(package_path)
    find_op(spec, "constexpr_sparse_to_dense").inputs["nonzero_data"].arguments[0].name = "x"
    write_spec(package_path, spec)
    package = load(package_path)
    stub_registry(declared_zeros(package))

    with pytest.raises(PackageError, match="input 'nonzero_data': bound to 'x', which is not the output of an earlier const"):
        package.weights()


def test_param_given_twice_is_rejected(packages, stub_registry, tmp_path):
    package_path = copy_package(packages("ios18_prune"), tmp_path)
    spec = read_spec(package_path)
    op = find_op(spec, "constexpr_sparse_to_dense")
    op.attributes["mask"].CopyFrom(op.inputs["mask"].arguments[0].value)
    write_spec(package_path, spec)
    package = load(package_path)
    stub_registry(declared_zeros(package))

    with pytest.raises(PackageError, match="parameter 'mask' is given both as attribute and as input"):
        package.weights()


def test_declared_output_type_edit_is_caught(packages, stub_registry, tmp_path):
    """A package whose declared output type is wrong fails even when the decoder is right."""
    package_path = copy_package(packages("ios18_prune"), tmp_path)
    spec = read_spec(package_path)
    find_op(spec, "constexpr_sparse_to_dense").outputs[0].type.tensorType.dataType = 11
    write_spec(package_path, spec)
    package = load(package_path)
    stub_registry(lambda op_type, name, params: (np.zeros((64, 128), np.float16),))

    with pytest.raises(UnknownDtypeError, match=r"decoded dtype is float16, but the output is declared tensor<fp32"):
        package.weights()
