"""The closed set of IR ops: one registry entry (`Op`) per op holds every
fact about it: its arity, shape rule, NumPy evaluation, VJP (or None for an
op only backward graphs hold), the code the Numba backend writes for it, and
its FLOPs.

The interpreter, autodiff, the code generator and the CLI's FLOP count read
the entries and know no op by name, so adding an op is one entry (in the
module of its family) plus its tests; tests/test_ops_registry.py checks that
every entry is complete and that a new entry needs nothing else.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator

from ..graph import Eqn
from . import elementwise, featurewise, scalars, structural, transposed
from .base import (ELEMENTWISE, FAMILIES, FEATURE_WISE, LAYOUT, PRODUCT, REDUCTION, Accumulate,
                   Evaluation, Op, Product, Row, Scalar, Type)

_ENTRIES = (elementwise.ENTRIES + featurewise.ENTRIES + structural.ENTRIES + transposed.ENTRIES
            + scalars.ENTRIES)
OPS: dict[str, Op] = {op.name: op for op in _ENTRIES}
assert len(OPS) == len(_ENTRIES)

# Derived, for readers and tests; code asks an entry (`OPS[op].backward_only`).
BACKWARD_ONLY = tuple(name for name, op in OPS.items() if op.backward_only)


def result_type(e: Eqn) -> Type:
    """(kind, shape) of what `e` computes; KeyError for an unknown op,
    ValueError if its arguments don't fit."""
    op = OPS[e.op]
    if op.arity is not None and len(e.args) != op.arity:
        raise ValueError(f"{e.op} takes {op.arity} argument(s), not {len(e.args)}")
    if op.arity is None and not e.args:
        raise ValueError(f"{e.op} takes one or more arguments")
    return op.type(e)


class Facet(Mapping):
    """One fact of every op, read live from the registry: `Facet("vjp")[op]`
    is `OPS[op].vjp`. A module may name one (autodiff's `RULES`) so that a
    test can swap a single rule for a broken one."""

    def __init__(self, field: str):
        self.field = field

    def __getitem__(self, op: str):
        return getattr(OPS[op], self.field)

    def __iter__(self) -> Iterator[str]:
        return iter(OPS)

    def __len__(self) -> int:
        return len(OPS)


__all__ = ["OPS", "BACKWARD_ONLY", "Op", "Evaluation", "Scalar", "Row", "Accumulate", "Product",
           "Facet", "result_type", "ELEMENTWISE", "FEATURE_WISE", "PRODUCT", "LAYOUT",
           "REDUCTION", "FAMILIES"]
