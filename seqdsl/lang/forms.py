"""The checks of the forms that let a cell be written as its paper writes
it (docs/language.md §6): computed outputs, learned scalars, transposes and
sums of matrices, and the warning for names that differ by a modifier letter.
A mixin of the cell checker (check.py), which owns the scope they fill.
"""
from __future__ import annotations

import unicodedata

from . import syntax as S
from ..errors import SeqWarning
from .rules import check_free_name

IDENTITY = "I"  # in a matrix expression `(W - γ * I) h`, the identity
SCALAR_SIZES = (1, "scalar")  # `param α : 1`, `param α : scalar`


def is_number(e) -> bool:
    return isinstance(e, S.Num) or (isinstance(e, S.Neg) and is_number(e.arg))


class PaperForms:
    """Methods of `_CellChecker` (check.py) for the forms of §6; they use its
    `err`, `_use`, `warnings` and `computed`."""

    def _computed_output(self, out: S.OutputDecl, inputs, states, state_locs) -> S.Equation:
        """`output ŷ<t> = expr`: ŷ becomes a state nothing reads back, so every
        backend carries it as it carries an output state."""
        t = out.target
        if t.time is not None and (t.time.base != "t" or t.time.offset != 0):
            raise self.err(f"`output {t}`: a computed output is this step's value, "
                           f"`output {t.name}<t> = ...`", t.loc)
        self._fresh(t.name, out.loc, inputs, states)
        states[t.name] = out.size
        state_locs[t.name] = out.loc
        self.computed = t.name
        return S.Equation(S.Var(t.name, S.Time("t", 0, t.loc), t.loc), out.expr, out.loc)

    def _check_decl(self, d: S.ParamDecl) -> None:
        if d.name.endswith(S.TRANSPOSE) and len(d.name) > 1:
            raise self.err(f"`{d.name}` is the transpose of `{d.name[:-1]}`, not a parameter "
                           "of its own", d.loc, hint=f"declare `param {d.name[:-1]}`")
        if d.size is not None and d.size not in SCALAR_SIZES:
            raise self.err(f"`param {d.name} : {d.size}`: only a learned scalar has its size "
                           "declared, `: 1` or `: scalar`", d.loc,
                           hint="the sizes of vectors and matrices are inferred from their uses")

    def _scalar(self, use, d: S.ParamDecl) -> None:
        if use.kind == "matrix":
            raise self.err(f"`{d.name}` is declared a scalar (`: {d.size}`) but is applied "
                           "here as a weight", use.loc,
                           hint=f"to scale a vector write `{d.name} * v`")
        use.scalar = True

    def _modifier_letters(self, params: dict, defined: set[str]) -> None:
        """`Wʳ` beside `W` is a second parameter, not a variant of `W`: a
        trailing modifier letter (as `ᵀ` was before it meant transpose) is
        part of the name. Marks such as `ŷ` beside `y` are not letters."""
        for name, use in params.items():
            base = name[:-1]
            if len(name) > 1 and unicodedata.category(name[-1]) == "Lm" and (
                    base in params or base in defined):
                self.warnings.append(SeqWarning(
                    f"`{name}` is a parameter of its own, unrelated to `{base}` (the modifier "
                    f"letter `{name[-1]}` is part of its name)", use.loc))

    def _matrix_name(self, name, loc, inputs, states, intermediates, params) -> str:
        transposed = name.endswith(S.TRANSPOSE) and len(name) > 1
        base = name[:-1] if transposed else name
        for what, table in (("an input", inputs), ("a state", states),
                            ("an intermediate", intermediates)):
            if base in table:
                raise self.err(f"`{base}` is {what}, not a weight: only a parameter can be "
                               f"applied to a vector", loc,
                               hint=f"for an elementwise product write `{base} * ...`")
        check_free_name(base, loc, self.source)
        self._use(params, base, "matrix", loc)
        return base

    def _matrix(self, m, inputs, states, intermediates, params, decls) -> set[str]:
        """Check a matrix expression `(W - Wᵀ - γ * I)`: weights, their
        transposes, the identity, sums and differences, and terms scaled by a
        number or a learned scalar. The parameters it names."""
        def is_factor(node) -> bool:
            return is_number(node) or (isinstance(node, S.Var) and node.time is None
                                        and node.name in decls
                                        and decls[node.name].size in SCALAR_SIZES)

        def scale(node) -> set[str]:  # the factor of `c * M`, `γ * M`, `γ M`
            if is_number(node):
                return set()
            if is_factor(node):
                self._use(params, node.name, "vector", node.loc)
                return {node.name}
            raise self.err("a matrix term is scaled by a number or a learned scalar", node.loc,
                           hint="declare the scalar: `param γ : 1`")

        if isinstance(m, S.Var) and m.time is None:
            if m.name == IDENTITY and IDENTITY not in decls:
                return set()
            return {self._matrix_name(m.name, m.loc, inputs, states, intermediates, params)}
        if isinstance(m, S.BinOp) and m.op in "+-":
            return (self._matrix(m.left, inputs, states, intermediates, params, decls)
                    | self._matrix(m.right, inputs, states, intermediates, params, decls))
        if isinstance(m, S.Neg):
            return self._matrix(m.arg, inputs, states, intermediates, params, decls)
        if isinstance(m, S.BinOp) and m.op == "*":
            factor, term = (m.left, m.right) if is_factor(m.left) else (m.right, m.left)
            return scale(factor) | self._matrix(term, inputs, states, intermediates, params,
                                                decls)
        if isinstance(m, S.Apply) and isinstance(m.arg, S.Var):  # `γ I`, `γ W`
            factor = S.Var(m.weight, None, m.weight_loc)
            return scale(factor) | self._matrix(m.arg, inputs, states, intermediates, params,
                                                decls)
        raise self.err("not a matrix: a matrix applied to a vector is a sum of weights (`W`, "
                       "`Wᵀ`), the identity `I` and their multiples by numbers", m.loc,
                       hint="e.g. `(W - Wᵀ - 0.01 * I) h`")
