"""Calling a compiled kernel from compiled code by its address.

A Numba function that calls another compiled function the usual way links
the callee's code into its own module, and LLVM optimises and translates
that module again as a whole: the network step that calls an LSTM's
generated forward and backward took 11.5 s to compile, nearly all of it the
kernels compiled a second time. `call_at(kernel, address, args)` calls the
kernel's machine code that is already loaded, through a pointer the caller
passes at run time: the caller compiles in a fraction of a second, its own
code only, and caches on disk like any other (no address is ever written
into machine code, so a cached caller is valid in every process).

`kernel` is `kernel_type(dispatcher)`, a module global of the generated
caller: the kernel's type, which gives the signature while the caller is
typed (a type, not the dispatcher itself, whose value Numba would write
into the caller as a process address, so the caller could not be cached);
`address` comes from `address_of` for the same kernel and signature. The call follows
Numba's own calling convention, so an exception the kernel raises (a
`MemoryError`) propagates as from any call.
"""
from __future__ import annotations

import numba
from numba import types
from numba.core import cgutils, sigutils
from numba.core.errors import TypingError
from numba.extending import intrinsic


def kernel_type(dispatcher) -> types.Type:
    """What the generated caller holds for a kernel it calls by address."""
    return numba.typeof(dispatcher)


def _overload(dispatcher, argtypes: tuple):
    """The compiled version of `dispatcher` for exactly `argtypes`, or None."""
    for key, cres in dispatcher.overloads.items():
        if tuple(key) == tuple(argtypes):
            return cres
    return None


def address_of(dispatcher, signature: str) -> int:
    """The address of `dispatcher`'s machine code for `signature` (a Numba
    signature string, as the kernel was compiled for); KeyError if it has
    no such version."""
    argtypes, _ = sigutils.normalize_signature(signature)
    cres = _overload(dispatcher, argtypes)
    if cres is None:
        raise KeyError(f"{dispatcher.py_func.__name__} is not compiled for {signature}")
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


@intrinsic
def call_at(typingctx, kernel, address, args):
    """kernel(*args), run by the machine code at `address`."""
    kind = getattr(kernel, "instance_type", None)
    if not (isinstance(kind, types.Dispatcher) and isinstance(address, types.Integer)
            and isinstance(args, types.BaseTuple)):
        raise TypingError("call_at(kernel, address, (arguments...)) takes a kernel_type, "
                          "its address and a tuple of its arguments")
    given = tuple(args.types)
    cres = _overload(kind.dispatcher, tuple(types.unliteral(t) for t in given))
    if cres is None:  # the address could not be of a version with these types
        raise TypingError(f"{kind.dispatcher.py_func.__name__} has no compiled version "
                          f"for {given}")
    callee = cres.signature

    def codegen(context, builder, signature, llargs):
        _, addr, packed = llargs
        values = [context.cast(builder, v, t, want) for v, t, want in zip(
            cgutils.unpack_tuple(builder, packed, len(given)), given, callee.args)]
        fnty = context.call_conv.get_function_type(callee.return_type, callee.args)
        fn = builder.inttoptr(addr, fnty.as_pointer())
        status, result = context.call_conv.call_function(builder, fn, callee.return_type,
                                                         callee.args, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return result

    return callee.return_type(kernel, address, args), codegen
