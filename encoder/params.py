"""Parameter bundles of the constexpr ops that the encoder produces, named after MIL parameters.

Each bundle holds the numpy arrays of one op (or one op chain) exactly as the iOS18 op
definitions expect them, with sub-byte element types held unpacked, one element per byte, in
an int8 or uint8 container. ``inputs()`` returns the op's parameters as a dict keyed by MIL
parameter name, which is what a decoder takes, and ``dtypes()`` the MIL element type of each
(``uint4`` for indices held in uint8, for example). The iOS16 twins hold the packed form of the older
ops; ``to_ios16()`` converts where the older op can express the tensor and raises
:class:`EncodingError` where it cannot.

The arrays of a bundle are read-only views, so the bundle's own fields cannot be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparseblob.runtime.bitpack import pack_bits
from sparseblob.runtime.errors import EncodingError

__all__ = [
    "SparseParams",
    "SparseParamsIos16",
    "LutParams",
    "LutParamsIos16",
    "QuantParams",
    "QuantParamsIos16",
    "LutToSparseParams",
    "SparseShiftScaleParams",
    "QuantizedLutParams",
    "ScaledLutParams",
]


def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    # A read-only view: the caller's own array keeps its flags.
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        array = array.copy()
    view = array.view()
    view.setflags(write=False)
    return view


def _freeze_fields(obj, names: tuple[str, ...]) -> None:
    for name in names:
        object.__setattr__(obj, name, _frozen(getattr(obj, name)))


def _index_bits(lut: np.ndarray) -> int:
    return int(lut.shape[-2]).bit_length() - 1


_MIL_NAMES = {
    np.dtype(np.float16): "fp16",
    np.dtype(np.float32): "fp32",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.uint32): "uint32",
}


def _mil_name(array: np.ndarray) -> str:
    return _MIL_NAMES[array.dtype]


@dataclass(frozen=True, eq=False)
class SparseParamsIos16:
    """Parameters of iOS16 ``constexpr_sparse_to_dense``.

    Attributes:
        nonzero_data: ``tensor<T, [D]>``, T in fp16, fp32, int8, uint8.
        mask: ``tensor<uint8, [ceil(N/8)]>``, the element mask packed LSB-first, padding bits 0.
        shape: ``tensor<uint32, [K]>``, the dense shape.
    """

    op_type = "constexpr_sparse_to_dense"
    nonzero_data: np.ndarray
    mask: np.ndarray
    shape: np.ndarray

    def __post_init__(self):
        _freeze_fields(self, ("nonzero_data", "mask", "shape"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name."""
        return {"nonzero_data": self.nonzero_data, "mask": self.mask, "shape": self.shape}

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        return {"nonzero_data": _mil_name(self.nonzero_data), "mask": "uint8", "shape": "uint32"}


@dataclass(frozen=True, eq=False)
class SparseParams:
    """Parameters of iOS18 ``constexpr_sparse_to_dense``.

    Attributes:
        nonzero_data: ``tensor<T, [D]>``: the values at the set mask bits, in C order.
        mask: ``tensor<uint1, shape>`` held as uint8 0/1, with the dense shape.
        nonzero_dtype: MIL element type of ``nonzero_data``: fp16, fp32, int8, uint8, int4 or
            uint4 (int4 and uint4 are held in int8 and uint8 containers).
    """

    op_type = "constexpr_sparse_to_dense"
    nonzero_data: np.ndarray
    mask: np.ndarray
    nonzero_dtype: str

    def __post_init__(self):
        _freeze_fields(self, ("nonzero_data", "mask"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name."""
        return {"nonzero_data": self.nonzero_data, "mask": self.mask}

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        return {"nonzero_data": self.nonzero_dtype, "mask": "uint1"}

    def to_ios16(self) -> SparseParamsIos16:
        """Return the iOS16 form: the mask packed into bytes plus an explicit shape.

        Raises:
            EncodingError: ``nonzero_dtype`` is int4 or uint4, which iOS16 does not have.
        """
        if self.nonzero_dtype in ("int4", "uint4"):
            raise EncodingError(
                f"nonzero_data: iOS16 constexpr_sparse_to_dense has no {self.nonzero_dtype} "
                "values; use the iOS18 form or encode the values as int8 or uint8"
            )
        return SparseParamsIos16(
            nonzero_data=self.nonzero_data,
            mask=pack_bits(self.mask, 1, name="mask"),
            shape=np.array(self.mask.shape, dtype=np.uint32),
        )


@dataclass(frozen=True, eq=False)
class LutParamsIos16:
    """Parameters of iOS16 ``constexpr_lut_to_dense``.

    Attributes:
        lut: ``tensor<T, [2**nbits]>``, nbits in 1, 2, 4, 6, 8.
        indices: ``tensor<uint8, [ceil(N*nbits/8)]>``, the indices packed LSB-first.
        shape: ``tensor<uint32, [K]>``, the dense shape.
    """

    op_type = "constexpr_lut_to_dense"
    lut: np.ndarray
    indices: np.ndarray
    shape: np.ndarray

    def __post_init__(self):
        _freeze_fields(self, ("lut", "indices", "shape"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name."""
        return {"lut": self.lut, "indices": self.indices, "shape": self.shape}

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        return {"lut": _mil_name(self.lut), "indices": "uint8", "shape": "uint32"}


@dataclass(frozen=True, eq=False)
class LutParams:
    """Parameters of iOS18 ``constexpr_lut_to_dense``.

    Attributes:
        indices: ``tensor<uintN, [d0..d(K-1)]>`` held as uint8, N = ``nbits``.
        lut: ``tensor<T, [G0..G(K-1), 2**N, VS]>``. Element ``i`` of ``indices`` reads the LUT of
            group ``i_k // (d_k / G_k)`` on every axis ``k``.
        vector_axis: the axis along which each index expands to VS consecutive elements, or
            ``None`` when VS is 1.
    """

    op_type = "constexpr_lut_to_dense"
    indices: np.ndarray
    lut: np.ndarray
    vector_axis: int | None = None

    def __post_init__(self):
        _freeze_fields(self, ("indices", "lut"))

    @property
    def nbits(self) -> int:
        """Width of one index in bits."""
        return _index_bits(self.lut)

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name, ``vector_axis`` only when set."""
        found = {"indices": self.indices, "lut": self.lut}
        if self.vector_axis is not None:
            found["vector_axis"] = np.int32(self.vector_axis)
        return found

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        found = {"indices": f"uint{self.nbits}", "lut": _mil_name(self.lut)}
        if self.vector_axis is not None:
            found["vector_axis"] = "int32"
        return found

    def to_ios16(self) -> LutParamsIos16:
        """Return the iOS16 form: one LUT for the whole tensor and packed indices.

        Raises:
            EncodingError: the LUT is per group or vector, or the index width is 3 bits.
        """
        if any(dim != 1 for dim in self.lut.shape[:-2]) or self.lut.shape[-1] != 1:
            raise EncodingError(
                f"lut: iOS16 constexpr_lut_to_dense takes one scalar LUT per tensor, but the LUT "
                f"has shape {list(self.lut.shape)}; use the iOS18 form"
            )
        if self.nbits == 3:
            raise EncodingError(
                "indices: iOS16 constexpr_lut_to_dense has no 3-bit indices (LUT sizes 2, 4, 16, "
                "64, 256); use the iOS18 form or 4 bits"
            )
        return LutParamsIos16(
            lut=self.lut.reshape(-1),
            indices=pack_bits(self.indices, self.nbits, name="indices"),
            shape=np.array(self.indices.shape, dtype=np.uint32),
        )


@dataclass(frozen=True, eq=False)
class QuantParamsIos16:
    """Parameters of iOS16 ``constexpr_affine_dequantize``: ``(quantized_data - zero_point) * scale``.

    Attributes:
        quantized_data: ``tensor<int8 or uint8, shape>``.
        zero_point: ``tensor<int8 or uint8, []>`` or ``[shape[axis]]``.
        scale: ``tensor<fp16 or fp32, []>`` or ``[shape[axis]]``.
        axis: the axis along which a rank-1 scale and zero point vary.
    """

    op_type = "constexpr_affine_dequantize"
    quantized_data: np.ndarray
    zero_point: np.ndarray
    scale: np.ndarray
    axis: int

    def __post_init__(self):
        _freeze_fields(self, ("quantized_data", "zero_point", "scale"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name."""
        return {
            "quantized_data": self.quantized_data,
            "zero_point": self.zero_point,
            "scale": self.scale,
            "axis": np.int32(self.axis),
        }

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        return {
            "quantized_data": _mil_name(self.quantized_data),
            "zero_point": _mil_name(self.zero_point),
            "scale": _mil_name(self.scale),
            "axis": "int32",
        }


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Parameters of iOS18 ``constexpr_blockwise_shift_scale``: ``(data - offset) * scale``.

    Attributes:
        data: ``tensor<SrcT, shape>``, the quantized values.
        scale: ``tensor<fp16 or fp32, S>`` with ``len(S) == len(shape)`` and every ``shape[i]``
            a multiple of ``S[i]``. Element ``i`` uses block ``i // (shape / S)``.
        offset: ``tensor<SrcT, S>`` or ``None`` (no offset: signed symmetric quantization).
        data_dtype: MIL element type of ``data`` and ``offset``: int8, uint8, int4 or uint4.
    """

    op_type = "constexpr_blockwise_shift_scale"
    data: np.ndarray
    scale: np.ndarray
    offset: np.ndarray | None
    data_dtype: str

    def __post_init__(self):
        _freeze_fields(self, ("data", "scale", "offset"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name, ``offset`` only when set."""
        found = {"data": self.data, "scale": self.scale}
        if self.offset is not None:
            found["offset"] = self.offset
        return found

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        found = {"data": self.data_dtype, "scale": _mil_name(self.scale)}
        if self.offset is not None:
            found["offset"] = self.data_dtype
        return found

    def to_ios16(self) -> QuantParamsIos16:
        """Return the iOS16 ``constexpr_affine_dequantize`` form.

        Raises:
            EncodingError: the data is 4-bit, or the scale varies along more than one axis.
        """
        if self.data_dtype not in ("int8", "uint8"):
            raise EncodingError(
                f"data: iOS16 constexpr_affine_dequantize takes int8 or uint8, not "
                f"{self.data_dtype}; use the iOS18 form"
            )
        varying = [axis for axis, dim in enumerate(self.scale.shape) if dim > 1]
        if len(varying) > 1:
            raise EncodingError(
                f"scale: iOS16 constexpr_affine_dequantize takes a per-tensor or per-channel "
                f"scale, but the scale has shape {list(self.scale.shape)} (per block); use the "
                "iOS18 form"
            )
        for axis in varying:
            if self.scale.shape[axis] != self.data.shape[axis]:
                raise EncodingError(
                    f"scale: iOS16 constexpr_affine_dequantize needs one scale per channel, but "
                    f"axis {axis} has {self.data.shape[axis]} channels and {self.scale.shape[axis]} "
                    "scales; use the iOS18 form"
                )
        axis = varying[0] if varying else 0
        if varying:
            scale = self.scale.reshape(-1)
        else:
            scale = self.scale.reshape(())
        if self.offset is None:
            zero_point = np.zeros(scale.shape, dtype=self.data.dtype)
        else:
            zero_point = self.offset.reshape(scale.shape)
        return QuantParamsIos16(
            quantized_data=self.data, zero_point=zero_point, scale=scale, axis=axis
        )


@dataclass(frozen=True, eq=False)
class LutToSparseParams:
    """Parameters of iOS18 ``constexpr_lut_to_sparse``, whose outputs feed ``constexpr_sparse_to_dense``.

    The chain is ``mask, nonzero_data = constexpr_lut_to_sparse(...)`` followed by
    ``constexpr_sparse_to_dense(nonzero_data=nonzero_data, mask=mask)``.

    Attributes:
        indices_mask: ``tensor<uint1, [d0..d(K-1)]>`` held as uint8 0/1, in indices coordinates.
        indices_nonzero_data: ``tensor<uintN, [D]>`` held as uint8: the indices at the set bits.
        lut: ``tensor<T, [G0..G(K-1), 2**N, VS]>``, as in :class:`LutParams`.
        vector_axis: as in :class:`LutParams`.
    """

    op_type = "constexpr_lut_to_sparse"
    indices_mask: np.ndarray
    indices_nonzero_data: np.ndarray
    lut: np.ndarray
    vector_axis: int | None = None

    def __post_init__(self):
        _freeze_fields(self, ("indices_mask", "indices_nonzero_data", "lut"))

    @property
    def nbits(self) -> int:
        """Width of one index in bits."""
        return _index_bits(self.lut)

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name, ``vector_axis`` only when set."""
        found = {
            "indices_mask": self.indices_mask,
            "indices_nonzero_data": self.indices_nonzero_data,
            "lut": self.lut,
        }
        if self.vector_axis is not None:
            found["vector_axis"] = np.int32(self.vector_axis)
        return found

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        found = {
            "indices_mask": "uint1",
            "indices_nonzero_data": f"uint{self.nbits}",
            "lut": _mil_name(self.lut),
        }
        if self.vector_axis is not None:
            found["vector_axis"] = "int32"
        return found


@dataclass(frozen=True, eq=False)
class SparseShiftScaleParams:
    """Parameters of iOS18 ``constexpr_sparse_blockwise_shift_scale``, feeding ``constexpr_sparse_to_dense``.

    The chain is ``mask, nonzero_data = constexpr_sparse_blockwise_shift_scale(...)`` followed by
    ``constexpr_sparse_to_dense(nonzero_data=nonzero_data, mask=mask)``. Blocks of ``scale`` and
    ``offset`` are counted in the dense coordinates of ``data_mask``.

    Attributes:
        data_mask: ``tensor<uint1, shape>`` held as uint8 0/1.
        nonzero_data: ``tensor<SrcT, [D]>``: the quantized values at the set bits, in C order.
        scale: ``tensor<fp16 or fp32, S>``, as in :class:`QuantParams`.
        offset: ``tensor<SrcT, S>`` or ``None``.
        data_dtype: MIL element type of ``nonzero_data`` and ``offset``.
    """

    op_type = "constexpr_sparse_blockwise_shift_scale"
    data_mask: np.ndarray
    nonzero_data: np.ndarray
    scale: np.ndarray
    offset: np.ndarray | None
    data_dtype: str

    def __post_init__(self):
        _freeze_fields(self, ("data_mask", "nonzero_data", "scale", "offset"))

    def inputs(self) -> dict[str, np.ndarray]:
        """Return the op parameters keyed by MIL name, ``offset`` only when set."""
        found = {"data_mask": self.data_mask, "nonzero_data": self.nonzero_data, "scale": self.scale}
        if self.offset is not None:
            found["offset"] = self.offset
        return found

    def dtypes(self) -> dict[str, str]:
        """Return the MIL element type of each parameter."""
        found = {"data_mask": "uint1", "nonzero_data": self.data_dtype, "scale": _mil_name(self.scale)}
        if self.offset is not None:
            found["offset"] = self.data_dtype
        return found


@dataclass(frozen=True, eq=False)
class QuantizedLutParams:
    """A palettized tensor whose LUT is itself quantized: a two-op (or three-op) chain.

    The chain is ``lut = constexpr_blockwise_shift_scale(**lut_quant.inputs())`` followed by
    ``palettized`` with its ``lut`` parameter bound to that output. ``palettized.lut`` holds the
    values the first op produces, bit for bit, so ``palettized`` alone decodes to the same
    tensor as the chain.

    Attributes:
        lut_quant: the quantized LUT, whose ``data`` has the LUT's shape.
        palettized: a :class:`LutParams` (``constexpr_lut_to_dense``) or a
            :class:`LutToSparseParams` (``constexpr_lut_to_sparse``, then
            ``constexpr_sparse_to_dense``).
    """

    lut_quant: QuantParams
    palettized: LutParams | LutToSparseParams


@dataclass(frozen=True, eq=False)
class ScaledLutParams:
    """A palettized tensor multiplied by one scale per output channel: a two-op chain.

    The chain is ``x = constexpr_lut_to_dense(**palettized.inputs())`` followed by
    ``constexpr_blockwise_shift_scale(data=x, scale=scale)``, so element ``i`` decodes to
    ``lut[...] * scale[channel(i)]``, rounded once to the scale dtype.

    Attributes:
        palettized: the LUT and indices of the weight divided by its channel scales.
        scale: ``tensor<fp16 or fp32, [1..Cout..1]>``, rank equal to the weight rank.
    """

    palettized: LutParams
    scale: np.ndarray = field()

    def __post_init__(self):
        _freeze_fields(self, ("scale",))

    def shift_scale_inputs(self) -> dict[str, np.ndarray]:
        """Return the parameters of the second op, other than ``data``, keyed by MIL name."""
        return {"scale": self.scale}
