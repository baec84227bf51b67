"""What every array a user hands a cell must be, checked at the API boundary
for every backend.

Compiled code trusts shapes: a weight too small is read out of bounds and
gives wrong numbers, a gradient too large is silently truncated. So nothing
reaches a backend unchecked, and a mistake gets one `SeqError` naming the
argument, the shape and dtype expected and the ones given. Float and integer
arrays are converted to the cell's dtype (float64 values given to a float32
cell are rounded; a value too large for it is refused) and copied when not
C-contiguous; booleans, complex numbers, strings and objects are refused.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..errors import SeqError

NUMBERS = "fiu"  # the dtype kinds converted to the cell's dtype; any other is refused
# Runs that would allocate less than this are not checked against free memory:
# reading it costs more than they do.
CHECKED_FROM_BYTES = 64 << 20


def describe(value) -> str:
    """How a given value reads in a message: its shape and dtype, or its type."""
    if value is None:
        return "None"
    if isinstance(value, (np.ndarray, np.generic, int, float, list, tuple)):
        try:
            a = np.asarray(value)
        except ValueError:  # a ragged nest of lists
            return f"a ragged {type(value).__name__}"
        if a.dtype.kind != "O":
            return f"shape {a.shape}, {a.dtype}"
    return type(value).__name__


def expected(shape: tuple, dtype, dims: str | None = None) -> str:
    """`shape (4, 7) (H×(H+X)), float64`; `T` and `B` may stand for any size."""
    text = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    return f"shape {text}" + (f" ({dims})" if dims else "") + f", {np.dtype(dtype).name}"


def as_array(arg: str, value, dtype, shape: tuple[int, ...], dims: str | None = None) -> np.ndarray:
    """`value` as a C-contiguous array of `dtype` and exactly `shape`."""
    if (type(value) is np.ndarray and value.dtype == dtype and value.shape == shape
            and value.flags.c_contiguous):
        return value  # already as wanted: the common case, checked in a few steps
    dtype = np.dtype(dtype)
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        a = None
    if a is None or a.dtype.kind not in NUMBERS or a.shape != tuple(shape):
        raise SeqError(f"{arg}: expected {expected(shape, dtype, dims)}; given {describe(value)}",
                       hint=_hint(a, dtype, shape))
    return np.ascontiguousarray(_converted(arg, a, dtype))


def _hint(a, dtype, shape) -> str | None:
    if a is None or a.dtype.kind not in NUMBERS:
        return f"pass an array of numbers (it is converted to {dtype.name})"
    if a.ndim == 2 and a.shape[::-1] == tuple(shape) and a.shape != tuple(shape):
        return "it looks transposed (the shape is rows × columns, as in W x)"
    return None


def _converted(arg: str, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`a` in `dtype`, refusing finite values that do not fit in it."""
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        out = a.astype(dtype)
    if a.dtype.kind == "f" and a.dtype.itemsize > dtype.itemsize:
        lost = np.isinf(out) & np.isfinite(a)
        if lost.any():
            raise SeqError(f"{arg}: value {a[lost].flat[0]:g} does not fit in {dtype.name} "
                           f"(largest {np.finfo(dtype).max:g})")
    return out


def check_names(arg: str, given, wanted, what: str) -> None:
    """Refuse names missing from `given` or not among `wanted`, naming both."""
    given, wanted = list(given), list(wanted)
    missing = [n for n in wanted if n not in given]
    extra = [n for n in given if n not in wanted]
    if missing or extra:
        parts = ([f"missing {', '.join(map(str, missing))}"] if missing else []) \
            + ([f"unknown {', '.join(map(repr, extra))}"] if extra else [])
        raise SeqError(f"{arg}: {'; '.join(parts)}", hint=f"{what}: {', '.join(wanted)}")


def mapping(arg: str, value, what: str, wanted) -> Mapping:
    if not isinstance(value, Mapping):
        raise SeqError(f"{arg}: expected a dict of arrays by name, given "
                       f"{type(value).__name__}", hint=f"{what}: {', '.join(wanted)}")
    return value


def params(given, shapes: dict[str, tuple[int, ...]], dims: dict[str, str], dtype,
           what: str) -> dict[str, np.ndarray]:
    """Every parameter, present, known, and of its exact shape."""
    given = mapping("params", given, what, shapes)
    check_names("params", given, shapes, what)
    return {k: as_array(f"params[{k!r}]", given[k], dtype, s, dims.get(k))
            for k, s in shapes.items()}


def inputs(x, sizes: dict[str, int], dtype, what: str) -> tuple[dict[str, np.ndarray], int, int]:
    """The inputs by name, each (T, B, its size) with one T and B; and T, B."""
    names = list(sizes)
    if not isinstance(x, Mapping):
        if len(names) != 1:
            raise SeqError(f"x: this cell has {len(names)} inputs, given one array "
                           f"({describe(x)})",
                           hint=f"pass a dict {{name: array}} ({what}: {', '.join(names)})")
        x = {names[0]: x}
    check_names("x", x, names, what)
    first = x[names[0]]
    try:
        shape = np.shape(first)
    except (ValueError, TypeError):  # a ragged nest of lists
        shape = ()
    if len(shape) != 3:
        label = "x" if len(names) == 1 else f"x[{names[0]!r}]"
        raise SeqError(f"{label}: expected {expected(('T', 'B', sizes[names[0]]), dtype)}; "
                       f"given {describe(first)}", hint="an array (steps, batch, features)")
    T, B = shape[:2]
    out = {}
    for n in names:
        label = "x" if len(names) == 1 else f"x[{n!r}]"
        out[n] = as_array(label, x[n], dtype, (T, B, sizes[n]),
                          "T, B, size" if len(names) == 1 else "T, B of the first input, size")
    return out, T, B


def lengths(value, T: int, B: int) -> np.ndarray:
    """One integer in 0..T per example, as int64; T for all when None."""
    if value is None:
        return np.full(B, T, np.int64)
    want = f"{B} integers in 0..{T} (one per example)"
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        a = np.asarray(None)
    whole = a.dtype.kind in "iu" or (a.dtype.kind == "f" and bool(np.isfinite(a).all())
                                     and bool((a == np.round(a)).all()))
    if a.shape != (B,) or not whole or a.min(initial=0) < 0 or a.max(initial=0) > T:
        shown = a.tolist() if a.dtype.kind in "iufb" and a.size <= 8 else describe(value)
        raise SeqError(f"lengths: expected {want}; given {shown}"
                       + (f" ({a.dtype})" if a.dtype.kind in "fb" else ""),
                       hint="the number of steps of each example, whole numbers")
    return np.ascontiguousarray(a, np.int64)


def valid_steps(T: int, lengths: np.ndarray) -> np.ndarray:
    """(T, B) booleans: whether step t is one of example b's `lengths[b]`."""
    return np.arange(T)[:, None] < lengths[None, :]


def per_state(arg: str, value, sizes: dict[str, int], B: int, dtype,
              what: str) -> dict[str, np.ndarray]:
    """`state0` or `d_final`: (B, size) per state; any left out are zero. A
    single array stands for the state of a one-state cell."""
    if value is None:
        value = {}
    elif not isinstance(value, Mapping):
        if len(sizes) != 1:
            raise SeqError(f"{arg}: this cell has states {', '.join(sizes)}, given one array "
                           f"({describe(value)})", hint=f"pass a dict {{state: array}} ({what}: "
                                f"{', '.join(sizes)})")
        value = {next(iter(sizes)): value}
    unknown = [n for n in value if n not in sizes]
    if unknown:
        raise SeqError(f"{arg}: unknown state {', '.join(map(repr, unknown))}",
                       hint=f"states: {', '.join(sizes)}")
    return {n: (as_array(f"{arg}[{n!r}]", value[n], dtype, (B, h), "B, size") if n in value
                else np.zeros((B, h), dtype)) for n, h in sizes.items()}


def step_gradient(value, T: int, B: int, H: int, dtype) -> np.ndarray:
    """`d_outputs`: exactly (T, B, H), zeros when None."""
    if value is None:
        return np.zeros((T, B, H), dtype)
    return as_array("d_outputs", value, dtype, (T, B, H), "T, B, output size")


# ---- memory --------------------------------------------------------------------------

def available_memory() -> int | None:
    """Bytes this process can take without swapping: the kernel's MemAvailable,
    capped by a container's (cgroup v2) limit; None where neither is known."""
    system = _meminfo_available()
    if system is None:
        system = _sysconf_available()  # free pages only (no reclaimable cache): stricter
    known = [v for v in (system, _cgroup_available()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        return None if limit == "max" else max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_size(nbytes: int) -> str:
    """`800 bytes`, `12.5 MiB`, `1,192.1 GiB`: binary multiples."""
    n = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{nbytes} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def check_memory(what: str, nbytes: int, hint: str) -> None:
    """Refuse, before allocating, `nbytes` more than the machine has free;
    `what` reads as the start of a sentence: "a forward run ... needs"."""
    if nbytes < CHECKED_FROM_BYTES:
        return
    free = available_memory()
    if free is not None and nbytes > free:
        raise SeqError(f"{what} about {format_size(nbytes)}, more than the "
                       f"{format_size(free)} of memory available", hint=hint)
