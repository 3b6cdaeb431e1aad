"""Deliberately broken copies of fixtures fail, and the report names the check and the weight.

A corrupted but well-formed weight decodes the same way in coremltools and in sparseblob, so
the coremltools cross-check passes on it. What catches each corruption:

- a mask whose set bits no longer match the values: the ``mask`` and ``decode`` rows;
- a mask bit moved inside its group, values unchanged: only ``reference_weight`` (kept values
  land on the wrong positions), as the pattern still holds and the outputs barely move;
- a LUT entry changed a lot: ``reference_weight`` and ``reference_output``; changed by one
  ulp: only the bit-exact ``expected`` arrays;
- a scale set to 0, negative or NaN: the ``scale`` row; a scale multiplied by 4:
  ``reference_output``;
- a pattern other than the expected one: the ``pattern`` row;
- a kernel that computes a wrong result: ``sparse_vs_dense`` when only the sparse path is
  wrong, and only outputs from another runtime (``expected_output``) when an op is wrong in
  every run.
"""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import numpy as np
import pytest

from sparseblob.runtime.errors import OptionError
from sparseblob.verify.report import Status
from sparseblob.verify.verify import verify_package

from ._packages import FIXTURES, copy_fixture, edit_payload, entry, flip_mask_bit, mask_bit

LINEAR = "linear_weight"


def _row(report, check: str, subject: str):
    rows = [row for row in report.checks if row.check == check and row.subject == subject]
    assert len(rows) == 1, (check, subject, rows)
    return rows[0]


def _failed(report) -> set[tuple[str, str]]:
    return {(row.check, row.subject) for row in report.checks if row.status is Status.FAIL}


def _dense(name: str):
    return FIXTURES / entry(name)["dense_package"]


# ---------------------------------------------------------------------------------------------
# Masks


@pytest.mark.parametrize("target", ["ios16", "ios18"])
def test_popcount_mismatch_fails(tmp_path, target):
    package = copy_fixture(f"{target}/prune_magnitude50", tmp_path)
    op = f"{LINEAR}_sparsified"
    index = next(i for i in range(64) if mask_bit(package, op, "mask", i) == 0)
    flip_mask_bit(package, op, "mask", index)

    report = verify_package(package)
    mask = _row(report, "mask", op)

    assert report.exit_code == 1
    assert mask.status is Status.FAIL
    counts = re.search(r"mask has (\d+) set bits, but nonzero_data has (\d+) values", mask.message)
    assert int(counts[1]) == int(counts[2]) + 1
    assert _row(report, "decode", op).status is Status.FAIL
    assert _row(report, "coremltools", op).status is not Status.PASS
    assert _row(report, "sparse_vs_dense", "linear").status is Status.FAIL
    assert _row(report, "mask", "conv_weight_sparsified").status is Status.PASS


def test_moved_mask_bit_caught_by_reference(tmp_path):
    name = "ios18/prune_2of4_dim1"
    package = copy_fixture(name, tmp_path)
    op = f"{LINEAR}_sparsified"
    # Swap a kept and a pruned element of one group of 4: the popcount and 2:4 still hold, and
    # the value moves to the pruned position.
    bits = [mask_bit(package, op, "mask", i) for i in range(4)]
    kept, pruned = bits.index(1), bits.index(0)
    flip_mask_bit(package, op, "mask", kept)
    flip_mask_bit(package, op, "mask", pruned)

    report = verify_package(package, reference=_dense(name), expect="2:4@axis1", min_cosine=0.8)

    assert _failed(report) == {("reference_weight", op)}
    assert "kept values differ from the reference" in _row(report, "reference_weight", op).message
    for check in ("mask", "decode", "coremltools", "pattern"):
        assert _row(report, check, op).status is Status.PASS


def test_ios16_padding_bit_fails(tmp_path):
    from sparseblob.encoder.config import CompressionConfig
    from sparseblob.encoder.mlpackage import compress_package
    from sparseblob.verify.builders import build_mlp_package

    dense = build_mlp_package(tmp_path / "dense.mlpackage", sizes=(13, 10), batch=1, target="iOS16")
    package = tmp_path / "pruned.mlpackage"
    compress_package(dense, package, CompressionConfig.from_options(min_elements=0, pattern="unstructured", sparsity=0.5))
    # 10 x 13 = 130 mask bits use 17 bytes; bits 130 to 135 are padding.
    flip_mask_bit(package, "dense0_weight_sparsified", "mask", 133)

    report = verify_package(package, run_model=False)
    mask = _row(report, "mask", "dense0_weight")

    assert mask.status is Status.FAIL
    assert "padding bits" in mask.message
    assert _row(report, "decode", "dense0_weight").status is Status.FAIL


# ---------------------------------------------------------------------------------------------
# LUTs


def _set_lut_entry(package, op, index, change):
    def edit(lut: np.ndarray) -> None:
        lut[index] = change(lut[index])

    edit_payload(package, op, "lut", edit, np.float16)


def test_large_lut_change_caught_by_reference(tmp_path):
    name = "ios18/palettize_uniform4"
    package = copy_fixture(name, tmp_path)
    op = f"{LINEAR}_palettized"
    _set_lut_entry(package, op, 7, lambda value: np.float16(30.0))

    report = verify_package(package, reference=_dense(name), min_cosine=0.9)

    assert _row(report, "reference_weight", op).status is Status.FAIL
    assert _row(report, "reference_output", "linear").status is Status.FAIL
    assert _row(report, "lut", op).status is Status.PASS
    assert _row(report, "coremltools", op).status is Status.PASS


def test_one_ulp_lut_change_caught_by_expected_arrays(tmp_path):
    name = "ios18/palettize_uniform4"
    package = copy_fixture(name, tmp_path)
    op = f"{LINEAR}_palettized"
    _set_lut_entry(package, op, 7, lambda value: np.nextafter(value, np.float16(np.inf)))

    report = verify_package(package, reference=_dense(name), expected=FIXTURES / entry(name)["expected"], min_cosine=0.9)

    assert _failed(report) == {("expected", op)}
    assert "differ" in _row(report, "expected", op).message
    assert _row(report, "reference_weight", op).status is Status.PASS


def test_nan_lut_entry_fails(tmp_path):
    package = copy_fixture("ios16/palettize_uniform4", tmp_path)
    op = f"{LINEAR}_palettized"
    _set_lut_entry(package, op, 3, lambda value: np.float16(np.nan))

    report = verify_package(package)
    lut = _row(report, "lut", op)

    assert lut.status is Status.FAIL
    assert "non-finite" in lut.message
    assert _row(report, "decode", op).status is Status.FAIL
    # coremltools decodes the NaN; sparseblob rejects it, so the two disagree.
    assert _row(report, "coremltools", op).status is Status.FAIL


# ---------------------------------------------------------------------------------------------
# Scales


def _set_scale(package, op, index, value, dtype=np.float16):
    def edit(scale: np.ndarray) -> None:
        scale[index] = value

    edit_payload(package, op, "scale", edit, dtype)


@pytest.mark.parametrize(
    ("value", "words"),
    [(0.0, "1 value equal to 0"), (-0.01, "1 value negative"), (np.nan, "1 value non-finite")],
)
def test_bad_scale_fails(tmp_path, value, words):
    package = copy_fixture("ios18/quantize_int8_symmetric_per_channel", tmp_path)
    op = f"{LINEAR}_quantized"
    _set_scale(package, op, 5, value)

    report = verify_package(package)
    scale = _row(report, "scale", op)

    assert report.exit_code == 1
    assert scale.status is Status.FAIL
    assert words in scale.message
    assert "index [5, 0]" in scale.message
    assert _row(report, "scale", "conv_weight_quantized").status is Status.PASS


def test_ios16_zero_scale_fails(tmp_path):
    package = copy_fixture("ios16/quantize_uint8_linear_per_channel", tmp_path)
    op = f"{LINEAR}_quantized"
    _set_scale(package, op, 2, 0.0)

    report = verify_package(package, run_model=False)

    assert _row(report, "scale", op).status is Status.FAIL


def test_zero_scale_in_used_sparse_block_fails(tmp_path):
    package = copy_fixture("ios18/joint_prune50_int8", tmp_path)
    op = "linear_weight_sparsified_nonzero_data_0_quantized"
    _set_scale(package, op, 0, 0.0)

    report = verify_package(package, run_model=False)
    scale = _row(report, "scale", "linear_weight_sparsified")

    assert scale.status is Status.FAIL
    assert "blocks that stored values use" in scale.message


def test_scaled_channel_caught_by_reference_output(tmp_path):
    name = "ios18/quantize_int8_symmetric_per_channel"
    package = copy_fixture(name, tmp_path)
    op = f"{LINEAR}_quantized"

    def quadruple(scale: np.ndarray) -> None:
        scale[5] *= 4

    edit_payload(package, op, "scale", quadruple, np.float16)

    report = verify_package(package, reference=_dense(name))

    assert _row(report, "scale", op).status is Status.PASS
    assert _row(report, "coremltools", op).status is Status.PASS
    assert _row(report, "reference_output", "linear").status is Status.FAIL


# ---------------------------------------------------------------------------------------------
# Patterns and kernels


def test_unstructured_package_fails_two_of_four(tmp_path):
    report = verify_package(FIXTURES / entry("ios18/prune_magnitude50")["package"], expect="2:4", run_model=False)
    failed = {row.subject for row in report.rows(check="pattern", status="fail")}

    assert report.exit_code == 1
    assert failed == {"linear_weight_sparsified", "conv_weight_sparsified", "grouped_conv_weight_sparsified"}
    assert "expected 2:4" in report.rows(check="pattern")[0].message


def test_palettized_package_fails_sparsity_expectation():
    report = verify_package(FIXTURES / entry("ios18/palettize_uniform4")["package"], expect="sparsity>=0.5", run_model=False)

    assert len(report.rows(check="pattern", status="fail")) == 3


def test_invalid_expectation_is_option_error():
    with pytest.raises(OptionError, match="not valid"):
        verify_package(FIXTURES / entry("ios18/prune_magnitude50")["package"], expect="two:four")


def test_expected_unknown_names_rejected(tmp_path):
    item = entry("ios18/prune_magnitude50")
    expected = dict(np.load(FIXTURES / item["expected"]))
    renamed = {f"renamed_{key}": value for key, value in expected.items()}
    path = tmp_path / "expected.npz"
    np.savez(path, **renamed)

    with pytest.raises(OptionError, match="name no constexpr output of prune_magnitude50.mlpackage"):
        verify_package(FIXTURES / item["package"], expected=path, run_model=False)


def test_wrong_sparse_kernel_caught(monkeypatch):
    from sparseblob.runtime import sparse_dispatch

    run_sparse_op = sparse_dispatch.run_sparse_op

    def wrong_sparse_op(*args, **kwargs):
        return tuple(np.asarray(result) + np.float32(0.25) for result in run_sparse_op(*args, **kwargs))

    monkeypatch.setattr(sparse_dispatch, "run_sparse_op", wrong_sparse_op)
    model = FIXTURES / "models" / "mlp"

    report = verify_package(model / "ios18_prune50.mlpackage", inputs=model / "inputs.npz", coremltools=False)

    assert _failed(report) == {("sparse_vs_dense", "y")}
    assert "differ beyond the tolerance" in _row(report, "sparse_vs_dense", "y").message


def test_wrong_op_caught_only_by_expected_outputs(monkeypatch):
    from sparseblob.runtime.ops import registry

    spec = registry.REGISTRY["linear"]

    def wrong_linear(*args, **kwargs):
        result = np.array(spec.function(*args, **kwargs))
        result[..., ::2] *= -1
        return result

    patched = dict(registry.REGISTRY, linear=dataclasses.replace(spec, function=wrong_linear))
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType(patched))
    model = FIXTURES / "models" / "mlp"

    # Both packages are dense, so every run computes linear with the wrong op.
    report = verify_package(
        model / "ios18_dense.mlpackage",
        reference=model / "ios16_dense.mlpackage",
        inputs=model / "inputs.npz",
        expected_outputs=model / "torch_outputs.npz",
        coremltools=False,
    )

    assert _row(report, "sparse_vs_dense", "y").status is Status.PASS
    assert _row(report, "reference_output", "y").status is Status.PASS
    assert _row(report, "expected_output", "y").status is Status.FAIL


def test_verify_leaves_the_package_untouched(tmp_path):
    import shutil

    from tests.conftest import FIXTURES

    package = tmp_path / "checked.mlpackage"
    shutil.copytree(FIXTURES / "formats/ios18/joint_prune50_palettize4.mlpackage", package)
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in package.rglob("*") if path.is_file()}

    verify_package(package, run_model=False)

    after = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in package.rglob("*") if path.is_file()}
    assert after == before
