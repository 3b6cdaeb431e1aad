"""Vector building blocks of the decode kernels, written as numba intrinsics in LLVM IR.

Each intrinsic emits target-independent LLVM IR on 512-bit vectors. On x86 with AVX-512
(VBMI2 for 8- and 16-bit elements) LLVM lowers them to single instructions: ``vpexpand*``
for the mask scatter, ``vperm*`` for the table lookup and ``vcvtps2ph``/``vcvtph2ps`` for
fp16 conversion. On other CPUs LLVM expands the vector operations into equivalent scalar
code, so results do not depend on the machine, only the speed does.

fp16 conversion is the exception: where the CPU has no conversion instruction (x86 without
F16C), LLVM would call runtime functions that numba's JIT cannot resolve, so the
intrinsics emit integer-only conversions instead, with the same results bit for bit.

Data arrays of the scatter and lookup intrinsics hold raw bits (uint8, uint16 or uint32).
The lane count of a vector is ``64 // itemsize`` of the output array; kernels step by the
same count through :func:`vector_lanes`.
"""

from __future__ import annotations

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

__all__ = [
    "VECTOR_BYTES",
    "vector_lanes",
    "expand_byte_mask",
    "expand_bit_mask",
    "lookup_vector",
    "shift_scale_vector",
    "popcount64",
    "half_bits",
    "float32_from_half_bits",
    "float32_bits",
    "float32_from_bits",
    "round_to_half",
    "native_half_conversion",
    "software_half_bits",
    "software_float32_from_half_bits",
]

VECTOR_BYTES = 64

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@numba.njit(inline="always")
def vector_lanes(out: np.ndarray) -> int:
    """Return the number of elements of ``out`` that one vector intrinsic call writes."""
    return VECTOR_BYTES // out.itemsize


def _lane_count(array_type) -> int:
    return VECTOR_BYTES * 8 // array_type.dtype.bitwidth


def _is_bits_array(array_type) -> bool:
    return (
        isinstance(array_type, types.Array)
        and isinstance(array_type.dtype, types.Integer)
        and not array_type.dtype.signed
        and array_type.dtype.bitwidth in (8, 16, 32)
    )


def _is_byte_array(array_type) -> bool:
    return isinstance(array_type, types.Array) and array_type.dtype == types.uint8


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


def _popcount(builder, bits, lanes):
    word = builder.bitcast(bits, ir.IntType(lanes))
    ctpop = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.IntType(lanes), [ir.IntType(lanes)]), f"llvm.ctpop.i{lanes}"
    )
    return builder.zext(builder.call(ctpop, [word]), _I64)


def _expand_and_store(context, builder, signature, args, bits, lanes):
    values_type, _, _, _, out_type = signature.args
    values, start, _, position, out = args
    element = context.get_data_type(out_type.dtype)
    vector = ir.VectorType(element, lanes)

    source = _element_pointer(context, builder, values_type, values, start)
    expandload = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector, [element.as_pointer(), ir.VectorType(_I1, lanes), vector]),
        f"llvm.masked.expandload.v{lanes}i{element.width}",
    )
    expanded = builder.call(expandload, [source, bits, ir.Constant(vector, None)])

    target = _element_pointer(context, builder, out_type, out, position)
    builder.store(expanded, builder.bitcast(target, vector.as_pointer()), align=1)
    return _popcount(builder, bits, lanes)


@intrinsic
def expand_byte_mask(typingctx, values, start, mask, position, out):
    """Scatter the next values into one vector of ``out``, where a byte mask is non-zero.

    ``out[position + k]`` for ``k < lanes`` becomes the next unread value of ``values``
    (reading from ``values[start]`` on) where ``mask[position + k] != 0``, and 0 elsewhere.
    Only as many values as there are non-zero mask bytes are read. Returns that count.
    """
    if not (_is_bits_array(values) and values.dtype == getattr(out, "dtype", None)):
        return None
    if not _is_byte_array(mask):
        return None
    lanes = _lane_count(out)

    def codegen(context, builder, signature, args):
        mask_type, position = signature.args[2], args[3]
        pointer = _element_pointer(context, builder, mask_type, args[2], position)
        byte_vector = ir.VectorType(_I8, lanes)
        mask_bytes = builder.load(builder.bitcast(pointer, byte_vector.as_pointer()), align=1)
        bits = builder.icmp_unsigned("!=", mask_bytes, ir.Constant(byte_vector, None))
        return _expand_and_store(context, builder, signature, args, bits, lanes)

    return types.int64(values, start, mask, position, out), codegen


@intrinsic
def expand_bit_mask(typingctx, values, start, mask_bits, position, out):
    """Scatter the next values into one vector of ``out``, where a packed mask bit is set.

    Like :func:`expand_byte_mask`, but the mask is LSB-first packed bits and ``position``
    must be a multiple of 8: lane ``k`` uses bit ``(position + k) % 8`` of byte
    ``(position + k) // 8``. Returns the number of values read.
    """
    if not (_is_bits_array(values) and values.dtype == getattr(out, "dtype", None)):
        return None
    if not _is_byte_array(mask_bits):
        return None
    lanes = _lane_count(out)

    def codegen(context, builder, signature, args):
        mask_type, position = signature.args[2], args[3]
        byte_index = builder.lshr(position, ir.Constant(position.type, 3))
        pointer = _element_pointer(context, builder, mask_type, args[2], byte_index)
        word_type = ir.IntType(lanes)
        word = builder.load(builder.bitcast(pointer, word_type.as_pointer()), align=1)
        # On a little-endian target, lane k of the bitcast vector is bit k of the word.
        bits = builder.bitcast(word, ir.VectorType(_I1, lanes))
        return _expand_and_store(context, builder, signature, args, bits, lanes)

    return types.int64(values, start, mask_bits, position, out), codegen


@intrinsic
def lookup_vector(typingctx, table, table_start, indices, index_position, out, out_position):
    """Write one vector ``out[out_position + k] = table[table_start + indices[index_position + k]]``.

    ``table`` must have ``lanes`` readable entries from ``table_start`` on (pad a shorter
    table), and every index must be below ``lanes``: a larger index gives an undefined lane.
    """
    if not (_is_bits_array(table) and table.dtype == getattr(out, "dtype", None)):
        return None
    if not _is_byte_array(indices):
        return None
    lanes = _lane_count(out)

    def codegen(context, builder, signature, args):
        table_type, _, indices_type, _, out_type, _ = signature.args
        table_value, start, indices_value, index_position, out_value, out_position = args
        element = context.get_data_type(out_type.dtype)
        vector = ir.VectorType(element, lanes)
        index_vector = ir.VectorType(_I8, lanes)

        table_pointer = _element_pointer(context, builder, table_type, table_value, start)
        entries = builder.load(builder.bitcast(table_pointer, vector.as_pointer()), align=1)
        index_pointer = _element_pointer(context, builder, indices_type, indices_value, index_position)
        codes = builder.load(builder.bitcast(index_pointer, index_vector.as_pointer()), align=1)

        # A build-vector of extracts at variable positions, which the x86 backend turns into
        # one variable permute (vpermb/vpermw/vpermd).
        result = ir.Constant(vector, None)
        for lane in range(lanes):
            code = builder.extract_element(codes, ir.Constant(_I32, lane))
            entry = builder.extract_element(entries, builder.zext(code, _I32))
            result = builder.insert_element(result, entry, ir.Constant(_I32, lane))

        target = _element_pointer(context, builder, out_type, out_value, out_position)
        builder.store(result, builder.bitcast(target, vector.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(table, table_start, indices, index_position, out, out_position), codegen


def _widen_vector(context, builder, vector, element_type):
    """Convert a vector of source elements to float32 lanes, exactly."""
    lanes = vector.type.count
    float_vector = ir.VectorType(ir.FloatType(), lanes)
    if element_type == types.float32:
        return vector
    if element_type == types.uint16:
        return _map_half_lanes(context, builder, vector, float_vector, _emit_float32_from_half_bits, "fpext")
    if element_type.signed:
        return builder.sitofp(vector, float_vector)
    return builder.uitofp(vector, float_vector)


def _map_half_lanes(context, builder, vector, result_type, emit_scalar, instruction):
    """Convert every lane between fp16 bits and float32, natively or lane by lane in software."""
    lanes = vector.type.count
    if _NATIVE_HALF:
        if instruction == "fpext":
            return builder.fpext(builder.bitcast(vector, ir.VectorType(ir.HalfType(), lanes)), result_type)
        return builder.bitcast(builder.fptrunc(vector, ir.VectorType(ir.HalfType(), lanes)), result_type)
    result = ir.Constant(result_type, None)
    for lane in range(lanes):
        index = ir.Constant(_I32, lane)
        converted = emit_scalar(context, builder, builder.extract_element(vector, index))
        result = builder.insert_element(result, converted, index)
    return result


@intrinsic
def shift_scale_vector(typingctx, data, position, offset, scale, out):
    """Write one vector ``out[position + k] = (float32(data[position + k]) - offset) * scale``.

    ``data`` is int8, uint8, uint16 (fp16 bits) or float32; ``out`` is uint16 (fp16 bits,
    rounded to nearest even) or float32. Each operation rounds as its scalar float32
    counterpart does, so the result equals the element-by-element loop.
    """
    if not isinstance(data, types.Array) or not isinstance(out, types.Array):
        return None
    if data.dtype not in (types.int8, types.uint8, types.uint16, types.float32):
        return None
    if out.dtype not in (types.uint16, types.float32) or offset != types.float32 or scale != types.float32:
        return None
    lanes = _lane_count(out)

    def codegen(context, builder, signature, args):
        data_type, _, _, _, out_type = signature.args
        data_value, position, offset_value, scale_value, out_value = args
        source_vector = ir.VectorType(context.get_data_type(data_type.dtype), lanes)

        source = _element_pointer(context, builder, data_type, data_value, position)
        loaded = builder.load(builder.bitcast(source, source_vector.as_pointer()), align=1)
        values = _widen_vector(context, builder, loaded, data_type.dtype)

        splat_offset = _splat(builder, offset_value, lanes)
        splat_scale = _splat(builder, scale_value, lanes)
        result = builder.fmul(builder.fsub(values, splat_offset), splat_scale)
        if out_type.dtype == types.uint16:
            bits_vector = ir.VectorType(ir.IntType(16), lanes)
            result = _map_half_lanes(context, builder, result, bits_vector, _emit_half_bits, "fptrunc")

        target = _element_pointer(context, builder, out_type, out_value, position)
        builder.store(result, builder.bitcast(target, result.type.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(data, position, offset, scale, out), codegen


def _splat(builder, scalar, lanes):
    """Return a vector with ``scalar`` in every lane."""
    vector_type = ir.VectorType(scalar.type, lanes)
    single = builder.insert_element(ir.Constant(vector_type, None), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(single, ir.Constant(vector_type, None), ir.Constant(ir.VectorType(_I32, lanes), None))


@intrinsic
def popcount64(typingctx, word):
    """Return the number of set bits of a uint64."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, [_I64]), "llvm.ctpop.i64"
        )
        return builder.call(ctpop, [args[0]])

    return types.uint64(word), codegen


def native_half_conversion() -> bool:
    """Return True when numba's target CPU converts fp16 in hardware: AArch64, or x86 with F16C.

    The x86 features are the ones numba compiles for: ``NUMBA_CPU_FEATURES`` when set, else
    the host's.
    """
    architecture = llvmlite.binding.get_process_triple().split("-")[0]
    if architecture in ("aarch64", "arm64"):
        return True
    if architecture not in ("x86_64", "i386", "i686"):
        return False
    features = config.CPU_FEATURES
    if features is None:
        features = llvmlite.binding.get_host_cpu_features().flatten()
    return "+f16c" in features.split(",")


_NATIVE_HALF = native_half_conversion()


@numba.njit
def software_half_bits(value):
    """Round a float32 to fp16 bits with integer operations, as the hardware does.

    Rounding is to nearest even, and magnitudes from 65520 up become infinity. A NaN becomes
    a quiet NaN that keeps the sign and the top 9 payload bits.
    """
    bits = float32_bits(value)
    sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    if magnitude > np.uint32(0x7F800000):
        payload = (magnitude & np.uint32(0x007FFFFF)) >> np.uint32(13)
        return np.uint16(sign | np.uint32(0x7E00) | payload)
    if magnitude >= np.uint32(0x477FF000):
        return np.uint16(sign | np.uint32(0x7C00))
    if magnitude >= np.uint32(0x38800000):
        # Rebias the exponent from 127 to 15, then drop 13 mantissa bits rounding to even:
        # adding 0xFFF plus the lowest kept bit carries exactly when the dropped bits exceed
        # half, or equal half with an odd kept part.
        lowest_kept = (magnitude >> np.uint32(13)) & np.uint32(1)
        rounded = magnitude - np.uint32(0x38000000) + np.uint32(0x0FFF) + lowest_kept
        return np.uint16(sign | (rounded >> np.uint32(13)))
    # Subnormal or zero: the code is |value| * 2**24 rounded to the nearest even integer,
    # which adding and subtracting 2**23 in float32 arithmetic does.
    scaled = float32_from_bits(magnitude) * np.float32(16777216.0)
    code = (scaled + np.float32(8388608.0)) - np.float32(8388608.0)
    return np.uint16(sign | np.uint32(code))


@numba.njit
def software_float32_from_half_bits(bits):
    """Widen fp16 bits to float32 with integer operations, as the hardware does.

    A NaN keeps its sign and payload and comes back quiet.
    """
    value = np.uint32(bits)
    sign = (value & np.uint32(0x8000)) << np.uint32(16)
    exponent = (value >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = value & np.uint32(0x3FF)
    if exponent == np.uint32(0x1F):
        quiet = np.uint32(0x00400000) if mantissa else np.uint32(0)
        return float32_from_bits(sign | np.uint32(0x7F800000) | quiet | (mantissa << np.uint32(13)))
    if exponent == np.uint32(0):
        magnitude = np.float32(mantissa) * np.float32(2.0**-24)
        return -magnitude if sign else magnitude
    return float32_from_bits(sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13)))


def _emit_half_bits(context, builder, value):
    if _NATIVE_HALF:
        return builder.bitcast(builder.fptrunc(value, ir.HalfType()), ir.IntType(16))
    return context.compile_internal(builder, software_half_bits.py_func, types.uint16(types.float32), [value])


def _emit_float32_from_half_bits(context, builder, bits):
    if _NATIVE_HALF:
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), ir.FloatType())
    return context.compile_internal(builder, software_float32_from_half_bits.py_func, types.float32(types.uint16), [bits])


@intrinsic
def half_bits(typingctx, value):
    """Round a float32 to fp16 (round to nearest even) and return its bits as uint16.

    A NaN comes back quiet, as from the hardware conversion.
    """
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return _emit_half_bits(context, builder, args[0])

    return types.uint16(value), codegen


@intrinsic
def float32_from_half_bits(typingctx, bits):
    """Widen fp16 bits (uint16) to float32 exactly; a signaling NaN comes back quiet."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return _emit_float32_from_half_bits(context, builder, args[0])

    return types.float32(bits), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """Return the float32 whose bits are the low 32 bits of the unsigned integer ``bits``."""
    if not isinstance(bits, types.Integer) or bits.signed:
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        if word.type.width > 32:
            word = builder.trunc(word, _I32)
        elif word.type.width < 32:
            word = builder.zext(word, _I32)
        return builder.bitcast(word, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def float32_bits(typingctx, value):
    """Return the bits of a float32 as uint32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _I32)

    return types.uint32(value), codegen


@numba.njit(inline="always")
def round_to_half(value: np.float32) -> np.float32:
    """Round a float32 to the nearest fp16 value and return it as float32, the way numpy does.

    numpy's float32-to-float16 cast keeps a NaN's payload bits without quieting it. It maps a
    payload that would truncate to zero onto the smallest one, where the hardware conversion
    quiets the NaN instead. The NaN branch reproduces numpy, so that a later operation sees
    the same payload.
    """
    if value != value:
        raw = float32_bits(value)
        sign = np.uint16((raw >> np.uint32(16)) & np.uint32(0x8000))
        payload = np.uint16((raw & np.uint32(0x007FFFFF)) >> np.uint32(13))
        if payload == 0:
            payload = np.uint16(1)
        return float32_from_half_bits(np.uint16(sign | np.uint16(0x7C00) | payload))
    return float32_from_half_bits(half_bits(value))
