"""Lowering a matrix applied to a vector, `(W - Wᵀ - γ * I) h`: the product
distributes over the matrix's terms (docs/language.md §6). A mixin of the
cell lowerer (lower.py), whose `emit`, `product`, `broadcast`, `params`,
`scalars`, `unify` and `scope` it uses.
"""
from __future__ import annotations

from ..errors import SeqError
from ..lang import syntax as S
from ..lang.forms import is_number
from ..lang.rules import constant_value
from .graph import BATCH, Lit, Var, total_size


def _is_factor(node, scalars) -> bool:
    """Whether `node` scales a matrix term: a number or a learned scalar (as
    the checker decides, lang/forms.py)."""
    return is_number(node) or (isinstance(node, S.Var) and node.name in scalars)


class MatrixForms:
    def matrix_apply(self, e: S.MatApply) -> Var:
        """`(W - Wᵀ - γ * I) v` as `W v - Wᵀ v - γ * v`: the product
        distributes over the matrix's terms, so no matrix is ever made and
        W's gradient collects every term it appears in."""
        parts = self.parts(e.arg.parts if isinstance(e.arg, S.Concat) else (e.arg,),
                           "multiplied by a matrix")
        total = None
        for coef, scalar, weight in self.matrix_terms(e.matrix, 1.0, None):
            if weight is None:  # the identity
                term = parts[0] if len(parts) == 1 else self.emit(
                    "concat", parts, BATCH, (total_size(parts),), e.loc)
            else:
                term = self.product(weight, parts, e.loc)
            if total is not None:
                self.unify.equate(total.size, term.size, e.loc, lambda x, y:
                                  f"the matrix's terms give vectors of sizes {x} and {y}")
            if scalar is not None:
                term = self.emit("mul", (self.broadcast(scalar, term.size, e.loc), term),
                                 BATCH, (term.size,), e.loc)
            if abs(coef) != 1:
                term = self.emit("mul", (Lit(abs(coef)), term), BATCH, (term.size,), e.loc)
            if total is None:
                total = term if coef > 0 else self.emit("neg", (term,), BATCH, (term.size,),
                                                        e.loc)
            else:
                total = self.emit("add" if coef > 0 else "sub", (total, term), BATCH,
                                  (term.size,), e.loc)
        return total

    def matrix_terms(self, m, coef: float, scalar: Var | None):
        """(coefficient, learned scalar or None, weight name or None for the
        identity) for each term of a matrix expression the checker passed."""
        if isinstance(m, S.Var):
            yield coef, scalar, None if m.name == "I" and m.name not in self.params else m.name
        elif isinstance(m, S.BinOp) and m.op in "+-":
            yield from self.matrix_terms(m.left, coef, scalar)
            yield from self.matrix_terms(m.right, coef if m.op == "+" else -coef, scalar)
        elif isinstance(m, S.Neg):
            yield from self.matrix_terms(m.arg, -coef, scalar)
        else:  # `c * M`, `γ * M`, `γ M`
            factor, term = ((m.left, m.right) if isinstance(m, S.BinOp) else
                            (S.Var(m.weight, None, m.weight_loc), m.arg))
            if isinstance(m, S.BinOp) and not _is_factor(factor, self.scalars):
                factor, term = term, factor
            if isinstance(factor, S.Var):
                if scalar is not None:
                    raise SeqError("a matrix term is scaled by one learned scalar at most",
                                   factor.loc, source=self.scope.source)
                yield from self.matrix_terms(term, coef, self.params[factor.name])
            else:
                yield from self.matrix_terms(term, coef * constant_value(factor), scalar)
