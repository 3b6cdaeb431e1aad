"""16-lane fp32 vector values and AVX-512 operations for numba kernels.

numba has no SIMD vector type, and LLVM does not turn a scalar loop over a bitmask into the
AVX-512 ``vexpandps`` instruction that unstructured sparsity needs. This module adds a numba
type :data:`f32x16` whose LLVM representation is ``<16 x float>``, so a vector accumulator
stays in a register across loop iterations. Its intrinsics emit the few vector instructions
the kernels use: loads with fp16 or integer conversion, mask expansion, table permutation,
fused multiply-add and horizontal sum.

The vector intrinsics use x86 AVX-512 LLVM intrinsics (``llvm.x86.avx512.*``), so they compile
only on a host with AVX-512F. :data:`AVAILABLE` is True when they can be used. Callers must
check it and use the portable kernels otherwise. The scalar intrinsics at the end of the module
(:func:`popcount`, :func:`trailing_zeros`, :func:`half_to_float`, :func:`round_to_half`) emit
target-independent LLVM IR and compile everywhere. Loads read 16 consecutive elements and do not check
bounds: callers pad every array they pass by at least 16 elements.
"""

from __future__ import annotations

import logging
import os

import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

logger = logging.getLogger(__name__)

__all__ = [
    "AVAILABLE",
    "LANES",
    "f32x16",
    "i32x16",
    "vzero",
    "vsplat",
    "vload",
    "vload_f16",
    "vload_u8",
    "vload_i8",
    "vload_index",
    "vexpand_index",
    "vkeep",
    "vpermute",
    "vgather",
    "vexpand",
    "vfma",
    "vadd",
    "vsub",
    "vmul",
    "vround_f16",
    "vhsum",
    "vstore",
    "vload_pieces",
    "vsplat_pieces",
    "vload_indexed",
    "vstore_folded",
    "vstore_pieces",
    "vexpand_f16_pair",
    "prefetch",
    "VBMI2",
    "popcount",
    "trailing_zeros",
    "half_to_float",
    "round_to_half",
]

LANES = 16

# Set SPARSEBLOB_NO_SIMD=1 to force the portable kernels on an AVX-512 host (used by tests).
_DISABLED = os.environ.get("SPARSEBLOB_NO_SIMD", "") not in ("", "0")


def _host_has_avx512() -> bool:
    # numba compiles for the host CPU unless NUMBA_CPU_NAME names another target; x86
    # intrinsics cannot be lowered for a generic target.
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    try:
        features = llvm_binding.get_host_cpu_features()
    except RuntimeError:
        return False
    return all(features.get(name, False) for name in ("avx512f", "avx512vl", "f16c"))


AVAILABLE: bool = _host_has_avx512() and not _DISABLED
logger.debug("AVX-512 sparse kernels %s", "enabled" if AVAILABLE else "disabled")


def _host_has(feature: str) -> bool:
    try:
        return bool(llvm_binding.get_host_cpu_features().get(feature, False))
    except RuntimeError:
        return False


# AVX-512 VBMI2 adds vpexpandw and vpexpandb: 32 fp16 values (two 16-column steps) expand at
# once, and 16 byte codes expand before their table lookup.
VBMI2: bool = AVAILABLE and _host_has("avx512vbmi2")


_F32 = ir.FloatType()
_F16 = ir.HalfType()
_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _vec(element: ir.Type, n: int = LANES) -> ir.VectorType:
    return ir.VectorType(element, n)


class F32x16Type(types.Type):
    """numba type of a ``<16 x float>`` LLVM vector."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


class I32x16Type(types.Type):
    """numba type of a ``<16 x i32>`` LLVM vector."""

    def __init__(self) -> None:
        super().__init__(name="i32x16")


f32x16 = F32x16Type()
i32x16 = I32x16Type()


@register_model(F32x16Type)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _vec(_F32))


@register_model(I32x16Type)
class _I32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _vec(_I32))


def _declare(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _element_pointer(context, builder, array_type, array, index, vector_type=None):
    """Pointer to ``array[index]``, cast to a pointer to ``vector_type`` when given."""
    data = context.make_array(array_type)(context, builder, array).data
    pointer = builder.gep(data, [index])
    if vector_type is not None:
        pointer = builder.bitcast(pointer, vector_type.as_pointer())
    return pointer


def _lane_mask(builder, mask):
    """``<16 x i1>`` from the low 16 bits of an integer, bit j selecting lane j."""
    bits = builder.trunc(mask, _I16) if mask.type.width > 16 else builder.zext(mask, _I16)
    return builder.bitcast(bits, _vec(_I1))


def _check_array(array_type, dtype) -> bool:
    return isinstance(array_type, types.Array) and array_type.dtype == dtype and array_type.ndim == 1


@intrinsic
def vzero(typingctx):
    """Return a vector of 16 zeros."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_vec(_F32), [ir.Constant(_F32, 0.0)] * LANES)

    return f32x16(), codegen


@intrinsic
def vsplat(typingctx, value):
    """Return ``value`` (float32) in all 16 lanes."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        undefined = ir.Constant(_vec(_F32), None)
        first = builder.insert_element(undefined, args[0], ir.Constant(_I32, 0))
        return builder.shuffle_vector(first, undefined, ir.Constant(_vec(_I32), [0] * LANES))

    return f32x16(types.float32), codegen


@intrinsic
def vload(typingctx, array, index):
    """Load ``array[index:index+16]`` from a float32 array."""
    if not _check_array(array, types.float32):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_F32))
        return builder.load(pointer, align=4)

    return f32x16(array, types.intp), codegen


@intrinsic
def vload_f16(typingctx, array, index):
    """Load 16 fp16 values stored as uint16 bits and widen them to fp32 (exact)."""
    if not _check_array(array, types.uint16):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_I16))
        bits = builder.load(pointer, align=2)
        return builder.fpext(builder.bitcast(bits, _vec(_F16)), _vec(_F32))

    return f32x16(array, types.intp), codegen


def _make_code_load(signed: bool, name: str):
    def load(typingctx, array, index):
        if not _check_array(array, types.uint8):
            return None

        def codegen(context, builder, signature, args):
            pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_I8))
            codes = builder.load(pointer, align=1)
            if signed:
                return builder.sitofp(codes, _vec(_F32))
            return builder.uitofp(codes, _vec(_F32))

        return f32x16(array, types.intp), codegen

    load.__name__ = name
    load.__doc__ = f"Load 16 bytes as {'int8' if signed else 'uint8'} codes and convert them to fp32 (exact)."
    return load


vload_u8 = intrinsic(_make_code_load(signed=False, name="vload_u8"))
vload_i8 = intrinsic(_make_code_load(signed=True, name="vload_i8"))


@intrinsic
def vload_index(typingctx, array, index):
    """Load 16 uint8 codes and zero-extend them to 32-bit lane indices."""
    if not _check_array(array, types.uint8):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_I8))
        return builder.zext(builder.load(pointer, align=1), _vec(_I32))

    return i32x16(array, types.intp), codegen


@intrinsic
def vexpand_index(typingctx, array, index, mask):
    """Spread 16 uint8 codes from ``array[index:]`` to the set bits of ``mask`` (``vpexpandb``).

    Returns the codes zero-extended to 32-bit lane indices, with 0 in the lanes whose bit is
    clear. Needs AVX-512 VBMI2.
    """
    if not _check_array(array, types.uint8) or not isinstance(mask, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_I8))
        codes = builder.load(pointer, align=1)
        expand = _declare(
            builder, "llvm.x86.avx512.mask.expand.v16i8", _vec(_I8), [_vec(_I8), _vec(_I8), _vec(_I1)]
        )
        zeros = ir.Constant(_vec(_I8), [ir.Constant(_I8, 0)] * LANES)
        expanded = builder.call(expand, [codes, zeros, _lane_mask(builder, args[2])])
        return builder.zext(expanded, _vec(_I32))

    return i32x16(array, types.intp, mask), codegen


@intrinsic
def vkeep(typingctx, vector, mask):
    """Return ``vector`` with the lanes whose bit of ``mask`` is clear set to 0.0."""
    if vector != f32x16 or not isinstance(mask, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        zeros = ir.Constant(_vec(_F32), [ir.Constant(_F32, 0.0)] * LANES)
        return builder.select(_lane_mask(builder, args[1]), args[0], zeros)

    return f32x16(f32x16, mask), codegen


@intrinsic
def vpermute(typingctx, table, index):
    """Return ``table[index[j]]`` in lane j; indices use their low 4 bits (``vpermps``)."""
    if table != f32x16 or index != i32x16:
        return None

    def codegen(context, builder, signature, args):
        permute = _declare(builder, "llvm.x86.avx512.permvar.sf.512", _vec(_F32), [_vec(_F32), _vec(_I32)])
        return builder.call(permute, [args[0], args[1]])

    return f32x16(f32x16, i32x16), codegen


@intrinsic
def vgather(typingctx, array, base, index):
    """Return ``array[base + index[j]]`` in lane j, for a float32 array."""
    if not _check_array(array, types.float32) or index != i32x16:
        return None

    def codegen(context, builder, signature, args):
        array_value, base_value, index_value = args
        pointer = _element_pointer(context, builder, signature.args[0], array_value, base_value)
        result = ir.Constant(_vec(_F32), None)
        for lane in range(LANES):
            lane_index = ir.Constant(_I32, lane)
            offset = builder.sext(builder.extract_element(index_value, lane_index), _I64)
            element = builder.load(builder.gep(pointer, [offset]), align=4)
            result = builder.insert_element(result, element, lane_index)
        return result

    return f32x16(array, types.intp, i32x16), codegen


@intrinsic
def vexpand(typingctx, vector, mask):
    """Spread the first popcount(mask) lanes of ``vector`` to the set bits of ``mask``.

    Lane j of the result is the k-th lane of ``vector`` when bit j of ``mask`` is the k-th set
    bit, and 0.0 when bit j is clear (``vexpandps`` with zeroing). Only the low 16 bits of
    ``mask`` are used.
    """
    if vector != f32x16 or not isinstance(mask, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        expand = _declare(
            builder, "llvm.x86.avx512.mask.expand.v16f32", _vec(_F32), [_vec(_F32), _vec(_F32), _vec(_I1)]
        )
        zeros = ir.Constant(_vec(_F32), [ir.Constant(_F32, 0.0)] * LANES)
        return builder.call(expand, [args[0], zeros, _lane_mask(builder, args[1])])

    return f32x16(f32x16, mask), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """Return ``a * b + c``, which LLVM may fuse into one rounding (``vfmadd``)."""
    if a != f32x16 or b != f32x16 or c != f32x16:
        return None

    def codegen(context, builder, signature, args):
        product = builder.fmul(args[0], args[1], flags=("contract",))
        return builder.fadd(product, args[2], flags=("contract",))

    return f32x16(f32x16, f32x16, f32x16), codegen


def _make_binary(operation: str, name: str):
    def binary(typingctx, a, b):
        if a != f32x16 or b != f32x16:
            return None

        def codegen(context, builder, signature, args):
            return getattr(builder, operation)(args[0], args[1])

        return f32x16(f32x16, f32x16), codegen

    binary.__name__ = name
    binary.__doc__ = f"Return the lane-wise {operation[1:]} of two vectors, rounded once per lane."
    return binary


vadd = intrinsic(_make_binary("fadd", "vadd"))
vsub = intrinsic(_make_binary("fsub", "vsub"))
vmul = intrinsic(_make_binary("fmul", "vmul"))


@intrinsic
def vround_f16(typingctx, vector):
    """Round each lane to the nearest fp16 value (ties to even) and widen back to fp32."""
    if vector != f32x16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], _vec(_F16)), _vec(_F32))

    return f32x16(f32x16), codegen


@intrinsic
def vhsum(typingctx, vector):
    """Return the sum of the 16 lanes (in an unspecified order)."""
    if vector != f32x16:
        return None

    def codegen(context, builder, signature, args):
        reduce = _declare(builder, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _vec(_F32)])
        return builder.call(reduce, [ir.Constant(_F32, -0.0), args[0]], fastmath=("reassoc",))

    return types.float32(f32x16), codegen


@intrinsic
def vstore(typingctx, array, index, vector):
    """Store ``vector`` to ``array[index:index+16]`` of a float32 array."""
    if not _check_array(array, types.float32) or vector != f32x16:
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_F32))
        builder.store(args[2], pointer, align=4)
        return context.get_dummy_value()

    return types.void(array, types.intp, f32x16), codegen


def _concatenate(builder, pieces: list, width: int):
    """Join ``16 // width`` vectors of ``width`` lanes into one 16-lane vector."""
    while len(pieces) > 1:
        joined = []
        size = pieces[0].type.count
        order = ir.Constant(_vec(_I32, 2 * size), list(range(2 * size)))
        for left, right in zip(pieces[0::2], pieces[1::2]):
            joined.append(builder.shuffle_vector(left, right, order))
        pieces = joined
    return pieces[0]


@intrinsic
def vload_pieces(typingctx, array, base, starts, first, width):
    """Load ``16 // width`` runs of ``width`` floats, run j from ``array[base + starts[first + j]]``.

    ``width`` must be a compile-time constant (a literal 1, 2, 4, 8 or 16).
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 2, 4, 8, 16):
        return None
    if not _check_array(array, types.float32) or not _check_array(starts, types.int32):
        return None
    run = width.literal_value

    def codegen(context, builder, signature, args):
        array_value, base_value, starts_value, first_value, _ = args
        pieces = []
        for j in range(LANES // run):
            position = builder.add(first_value, ir.Constant(first_value.type, j))
            start_pointer = _element_pointer(context, builder, signature.args[2], starts_value, position)
            start = builder.add(base_value, builder.sext(builder.load(start_pointer), _I64))
            if run == 1:
                pointer = _element_pointer(context, builder, signature.args[0], array_value, start)
                pieces.append(builder.insert_element(ir.Constant(_vec(_F32, 1), None), builder.load(pointer, align=4), ir.Constant(_I32, 0)))
            else:
                pointer = _element_pointer(context, builder, signature.args[0], array_value, start, _vec(_F32, run))
                pieces.append(builder.load(pointer, align=4))
        return _concatenate(builder, pieces, run)

    return f32x16(array, types.intp, starts, types.intp, width), codegen


@intrinsic
def vsplat_pieces(typingctx, array, base, starts, first, width):
    """Fill run j of ``width`` lanes with ``array[base + starts[first + j]]``, for ``16 // width`` runs.

    ``width`` must be a compile-time constant (a literal 1, 2, 4, 8 or 16).
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 2, 4, 8, 16):
        return None
    if not _check_array(array, types.float32) or not _check_array(starts, types.int32):
        return None
    run = width.literal_value

    def codegen(context, builder, signature, args):
        array_value, base_value, starts_value, first_value, _ = args
        undefined = ir.Constant(_vec(_F32, 1), None)
        pieces = []
        for j in range(LANES // run):
            position = builder.add(first_value, ir.Constant(first_value.type, j))
            start_pointer = _element_pointer(context, builder, signature.args[2], starts_value, position)
            start = builder.add(base_value, builder.sext(builder.load(start_pointer), _I64))
            pointer = _element_pointer(context, builder, signature.args[0], array_value, start)
            scalar = builder.insert_element(undefined, builder.load(pointer, align=4), ir.Constant(_I32, 0))
            pieces.append(builder.shuffle_vector(scalar, undefined, ir.Constant(_vec(_I32, run), [0] * run)))
        return _concatenate(builder, pieces, run)

    return f32x16(array, types.intp, starts, types.intp, width), codegen


@intrinsic
def vload_indexed(typingctx, array, base, columns, first):
    """Return ``array[base + columns[first + j]]`` in lane j, with scalar loads (no gather).

    ``columns`` is a uint16 or int32 array of indices into the float32 ``array``.
    """
    if not _check_array(array, types.float32) or not isinstance(columns, types.Array):
        return None
    if columns.dtype not in (types.uint16, types.int32) or columns.ndim != 1:
        return None
    unsigned = columns.dtype == types.uint16

    def codegen(context, builder, signature, args):
        array_value, base_value, columns_value, first_value = args
        base = _element_pointer(context, builder, signature.args[0], array_value, base_value)
        result = ir.Constant(_vec(_F32), None)
        for lane in range(LANES):
            position = builder.add(first_value, ir.Constant(first_value.type, lane))
            column = builder.load(_element_pointer(context, builder, signature.args[2], columns_value, position))
            column = builder.zext(column, _I64) if unsigned else builder.sext(column, _I64)
            element = builder.load(builder.gep(base, [column]), align=4)
            result = builder.insert_element(result, element, ir.Constant(_I32, lane))
        return result

    return f32x16(array, types.intp, columns, types.intp), codegen


@intrinsic
def vstore_folded(typingctx, array, index, vector, width):
    """Store ``width`` sums to ``array[index:index+width]``: sum i adds lanes ``i, i+width, ...``.

    ``width`` must be a compile-time constant (a literal 1, 2, 4, 8 or 16).
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 2, 4, 8, 16):
        return None
    if not _check_array(array, types.float32) or vector != f32x16:
        return None
    run = width.literal_value

    def codegen(context, builder, signature, args):
        array_value, index_value, folded, _ = args
        size = LANES
        while size > run:
            size //= 2
            low = builder.shuffle_vector(folded, folded, ir.Constant(_vec(_I32, size), list(range(size))))
            high = builder.shuffle_vector(folded, folded, ir.Constant(_vec(_I32, size), list(range(size, 2 * size))))
            folded = builder.fadd(low, high)
        pointer = _element_pointer(context, builder, signature.args[0], array_value, index_value, _vec(_F32, run))
        builder.store(folded, pointer, align=4)
        return context.get_dummy_value()

    return types.void(array, types.intp, f32x16, width), codegen


@intrinsic
def vstore_pieces(typingctx, array, base, stride, starts, first, count, width, vector):
    """Scatter the first ``count`` runs of ``vector`` to ``array``: lane ``j * width + i`` goes
    to ``array[base + i * stride + starts[first + j]]`` for ``j < count``.

    With ``stride == 1`` each run of ``width`` lanes is stored contiguously (column blocks);
    with ``stride`` equal to a row length each run is a column of ``width`` rows (row blocks).
    ``width`` must be a compile-time constant (a literal 1, 2, 4, 8 or 16).
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 2, 4, 8, 16):
        return None
    if not _check_array(array, types.float32) or not _check_array(starts, types.int32) or vector != f32x16:
        return None
    run = width.literal_value

    def codegen(context, builder, signature, args):
        array_value, base_value, stride_value, starts_value, first_value, count_value, _, vector_value = args
        origin = _element_pointer(context, builder, signature.args[0], array_value, base_value)
        for j in range(LANES // run):
            inside = builder.icmp_signed(">", count_value, ir.Constant(count_value.type, j))
            with builder.if_then(inside, likely=True):
                position = builder.add(first_value, ir.Constant(first_value.type, j))
                start_pointer = _element_pointer(context, builder, signature.args[3], starts_value, position)
                start = builder.sext(builder.load(start_pointer), _I64)
                for i in range(run):
                    offset = builder.add(start, builder.mul(stride_value, ir.Constant(_I64, i)))
                    element = builder.extract_element(vector_value, ir.Constant(_I32, j * run + i))
                    builder.store(element, builder.gep(origin, [offset]), align=4)
        return context.get_dummy_value()

    return types.void(array, types.intp, types.intp, starts, types.intp, types.intp, width, f32x16), codegen


@intrinsic
def vexpand_f16_pair(typingctx, array, index, mask):
    """Expand 32 fp16 values (uint16 bits) from ``array[index:]`` to the set bits of a 32-bit
    ``mask`` and widen them to fp32: returns lanes 0-15 and lanes 16-31 (AVX-512 VBMI2)."""
    if not _check_array(array, types.uint16) or not isinstance(mask, types.Integer):
        return None
    pair = types.UniTuple(f32x16, 2)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], _vec(_I16, 32))
        bits = builder.load(pointer, align=2)
        mask_value = args[2]
        if mask_value.type.width > 32:
            mask_value = builder.trunc(mask_value, _I32)
        elif mask_value.type.width < 32:
            mask_value = builder.zext(mask_value, _I32)
        lanes = builder.bitcast(mask_value, _vec(_I1, 32))
        expand = _declare(
            builder, "llvm.x86.avx512.mask.expand.v32i16", _vec(_I16, 32), [_vec(_I16, 32), _vec(_I16, 32), _vec(_I1, 32)]
        )
        expanded = builder.call(expand, [bits, ir.Constant(_vec(_I16, 32), [ir.Constant(_I16, 0)] * 32), lanes])
        halves = []
        for start in (0, LANES):
            half = builder.shuffle_vector(expanded, expanded, ir.Constant(_vec(_I32), list(range(start, start + LANES))))
            halves.append(builder.fpext(builder.bitcast(half, _vec(_F16)), _vec(_F32)))
        return context.make_tuple(builder, signature.return_type, halves)

    return pair(array, types.intp, mask), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Hint the CPU to load the cache line of ``array[index]`` (no effect on results)."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        byte_pointer = builder.bitcast(pointer, _I8.as_pointer())
        function = _declare(builder, "llvm.prefetch.p0", ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
        # Read access, high temporal locality, data cache.
        builder.call(function, [byte_pointer, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(array, types.intp), codegen


@intrinsic
def popcount(typingctx, value):
    """Return the number of set bits of an integer, as int64."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        count = builder.call(builder.module.declare_intrinsic("llvm.ctpop", [word.type]), [word])
        return builder.zext(count, _I64) if word.type.width < 64 else count

    return types.int64(value), codegen


@intrinsic
def trailing_zeros(typingctx, value):
    """Return the index of the lowest set bit of a non-zero integer, as int64."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        function = builder.module.declare_intrinsic("llvm.cttz", [word.type, _I1])
        count = builder.call(function, [word, ir.Constant(_I1, 0)])
        return builder.zext(count, _I64) if word.type.width < 64 else count

    return types.int64(value), codegen


@intrinsic
def half_to_float(typingctx, bits):
    """Return the fp16 value with bits ``bits`` (uint16) as fp32 (exact)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], _F16), _F32)

    return types.float32(types.uint16), codegen


@intrinsic
def round_to_half(typingctx, value):
    """Round an fp32 value to the nearest fp16 value (ties to even) and widen it back."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], _F16), _F32)

    return types.float32(types.float32), codegen
