"""Checking mutants as a user's cell is checked, and keeping the new ones.

A mutant counts as valid when its printed source loads (`seqdsl.loads`:
parse, check, lower) as any cell a user writes would; the others are
counted by the reason the checker gives. Valid mutants are told apart by
the canonical form of their step graphs, so a cell reached twice, or under
other names, is kept once.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import SeqError
from ..ir.lower import CellType
from ..lang import syntax as S
from ..lang.parse import parse
from ..lang.unparse import unparse_cell
from ..spec import loads
from .canonical import canonical_key
from .mutate import Mutant, mutants

# A mutant whose printed source does not parse back is a bug here, not a
# bad cell: its reason says so, and tests look for it.
UNPARSE_FAILED = "unparse: the printed source does not parse back"


@dataclass(frozen=True)
class Checked:
    mutant: Mutant
    source: str
    cell_type: CellType
    key: str  # canonical_key(cell_type)


@dataclass
class Exploration:
    attempts: int = 0
    valid: list[Checked] = field(default_factory=list)  # distinct, in the order found
    invalid: Counter = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0  # valid, but the same cell as an earlier one (or the parent)


def reason(error: SeqError) -> str:
    """A short category of a checker's message: its first line, with the
    names in it (`` `Γu` ``) and numbers blanked, so one cause is one reason."""
    first = error.message.splitlines()[0] if error.message else "error"
    first = re.sub(r"`[^`]*`", "`…`", first)
    return re.sub(r"\d+", "N", first)


def check(mutant: Mutant) -> Checked | str:
    """The mutant loaded as a user's cell, or the reason it is invalid."""
    source = unparse_cell(mutant.cell)
    try:
        if parse(source).definitions[0] != mutant.cell:
            return UNPARSE_FAILED
    except SeqError:
        return UNPARSE_FAILED
    try:
        cell_type = loads(source, "<mutant>", library=False).cell()
    except SeqError as e:
        return reason(e)
    return Checked(mutant, source, cell_type, canonical_key(cell_type))


def parent_key(cell: S.CellDef) -> str:
    return canonical_key(loads(unparse_cell(cell), "<parent>", library=False).cell())


def explore(cell: S.CellDef, rng: random.Random, attempts: int, distinct: int | None = None,
            steps: tuple[int, int] = (1, 2)) -> Exploration:
    """Draw up to `attempts` mutants of `cell` (see `mutants`), stopping once
    `distinct` valid, distinct ones are found; a mutant that is the parent
    cell again counts as a duplicate."""
    result = Exploration()
    seen = {parent_key(cell)}
    for mutant in mutants(cell, rng, attempts, steps):
        result.attempts += 1
        checked = check(mutant)
        if isinstance(checked, str):
            result.invalid[checked] += 1
        elif checked.key in seen:
            result.duplicates += 1
        else:
            seen.add(checked.key)
            result.valid.append(checked)
            if distinct is not None and len(result.valid) >= distinct:
                break
    return result
