"""Compiled functions that kernels call by name: C functions registered as
symbols, as BLIS's are.

Numba links the code of every compiled function a kernel calls into the
kernel's own module, and optimises and compiles it again there, in every
kernel. A loop that any kernel may call is compiled here once instead, as a
C function of each dtype, and a kernel's call passes its arrays' addresses
and shapes. Measured on the LSTM (float32, H=128, cold, Numba's time in
LLVM): forward 1.73 s with the block copies and transposes linked, 1.27 s
with them called by name; backward 2.46 s and 1.67 s. Only C-contiguous
arrays go by name (a C function sees each array as its address and shape).
"""
from __future__ import annotations

from typing import Callable

import llvmlite.binding as llvm
from llvmlite import ir
from numba import cfunc, types
from numba.core import cgutils

DTYPES = (types.float32, types.float64)


def _symbol(name: str, dtype) -> str:
    return f"seqdsl_{name}_{dtype}"


def register(name: str, body: Callable, ranks: tuple[int, ...], integers: int) -> None:
    """`body` compiled as a C function of each dtype, named for `name` and
    the dtype: its arguments, for arrays of the given ranks, each array's
    address then its shape, then `integers` int64 values."""
    for dtype in DTYPES:
        arrays = [t for rank in ranks for t in (types.CPointer(dtype),) + (types.int64,) * rank]
        fn = cfunc(types.void(*arrays, *[types.int64] * integers), cache=True,
                   error_model="numpy")(body)
        llvm.add_symbol(_symbol(name, dtype), fn.address)


def by_name(*arrays) -> bool:
    """Whether a call with these arrays can go by name: all C-contiguous,
    of one of the dtypes."""
    return all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) \
        and len({a.dtype for a in arrays}) == 1 and arrays[0].dtype in DTYPES


def call(name: str):
    """An intrinsic's code calling C function `name` (of the first
    argument's dtype) with the call's arguments: each array as its address
    and shape, each other value as an int64."""

    def codegen(context, builder, signature, args):
        values, kinds = [], []
        i64 = ir.IntType(64)
        for ty, value in zip(signature.args, args):
            if isinstance(ty, types.Array):
                made = context.make_array(ty)(context, builder, value)
                shape = cgutils.unpack_tuple(builder, made.shape, ty.ndim)
                values += [made.data, *shape]
                kinds += [made.data.type] + [i64] * ty.ndim
            else:
                values.append(context.cast(builder, value, ty, types.int64))
                kinds.append(i64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), kinds),
                                            _symbol(name, signature.args[0].dtype))
        builder.call(fn, values)
        return context.get_dummy_value()
    return codegen
