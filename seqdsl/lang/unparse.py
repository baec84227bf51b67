"""Syntax tree → `.seq` source, as a user would write it.

The inverse of `parse` up to positions and comments: `parse(unparse_cell(c))`
gives a tree equal to `c` (positions are not compared). Parentheses are
written only where the grammar's precedence needs them, so a printed cell
reads like the shipped ones (`Γu = σ(Wu[c, x] + bu)`). A tree only the
grammar could produce is printed faithfully; one it could not (a negative
`Num`, which the parser spells as unary minus) is printed as its nearest
parseable form.
"""
from __future__ import annotations

import math

from . import syntax as S

# Binding levels, loosest first, as in seq.lark: sum, product, unary, apply, primary.
SUM, PRODUCT, UNARY, APPLY, PRIMARY = range(5)
INDENT = "    "


def unparse_cell(cell: S.CellDef) -> str:
    """The cell as `.seq` source text, ending with a newline."""
    return unparse_definition(cell)


def unparse_definition(definition: S.CellDef | S.NetworkDef) -> str:
    """A cell or a network as `.seq` source text, ending with a newline."""
    keyword = "cell" if isinstance(definition, S.CellDef) else "network"
    lines = [f"{keyword} {definition.name} {{"]
    lines += _body(definition.body, 1)
    lines.append("}")
    return "\n".join(lines) + "\n"


def unparse_module(module: S.Module) -> str:
    """Every definition of a module, separated by blank lines."""
    return "\n".join(unparse_definition(d) for d in module.definitions)


def _body(statements, depth: int) -> list[str]:
    lines = []
    for st in statements:
        if isinstance(st, S.Repeat):
            lines.append(f"{INDENT * depth}repeat {st.count} {{")
            lines += _body(st.body, depth + 1)
            lines.append(f"{INDENT * depth}}}")
        else:
            lines.append(INDENT * depth + unparse_statement(st))
    return lines


def _sized(size) -> str:
    return "" if size is None else f" : {size}"


def unparse_statement(st: S.Statement) -> str:
    """One statement on one line (a `repeat` block on several)."""
    if isinstance(st, S.InputDecl):
        return "input " + ", ".join(st.names) + ("" if st.kind is None else f" : {st.kind}")
    if isinstance(st, S.StateDecl):
        return "state " + ", ".join(st.names) + _sized(st.size)
    if isinstance(st, S.ParamDecl):
        head = f"param {st.name}{_sized(st.size)}"
        if st.value is not None:
            return f"{head} = {unparse_expr(st.value)}"
        if st.init is not None:
            return f"{head} ~ {unparse_expr(st.init)}"
        return head
    if isinstance(st, S.OutputDecl):
        head = f"output {st.target}{_sized(st.size)}"
        return head if st.expr is None else f"{head} = {unparse_expr(st.expr)}"
    if isinstance(st, S.Equation):
        return f"{st.target}{_sized(st.size)} = {unparse_expr(st.expr)}"
    if isinstance(st, S.Repeat):
        return "\n".join(_body((st,), 0))
    raise TypeError(f"not a statement: {type(st).__name__}")


def unparse_expr(expr: S.Expr) -> str:
    """An expression as source text, with the parentheses precedence needs."""
    return _expr(expr)


def _level(expr: S.Expr) -> int:
    """How tightly the printed form of `expr` binds."""
    if isinstance(expr, S.BinOp):
        return SUM if expr.op in "+-" else PRODUCT
    if isinstance(expr, S.Neg):
        return UNARY
    if isinstance(expr, S.Num) and (expr.value < 0 or math.copysign(1, expr.value) < 0):
        return UNARY  # printed as unary minus
    if isinstance(expr, (S.Apply, S.MatApply)):
        return APPLY
    return PRIMARY


def _at(expr: S.Expr, level: int) -> str:
    """`expr` where the grammar expects something binding at least `level`."""
    text = _expr(expr)
    return text if _level(expr) >= level else f"({text})"


def _expr(expr: S.Expr) -> str:
    if isinstance(expr, S.Var):
        return str(expr)
    if isinstance(expr, S.Num):
        return _number(expr.value)
    if isinstance(expr, S.BinOp):
        # Left-associative: the left operand may be as loose as the operator,
        # the right one must bind tighter (`a - (b - c)`).
        level = _level(expr)
        return f"{_at(expr.left, level)} {expr.op} {_at(expr.right, level + 1)}"
    if isinstance(expr, S.Neg):
        return "-" + _at(expr.arg, UNARY)
    if isinstance(expr, S.Apply):
        return expr.weight + _applied_to(expr.arg)
    if isinstance(expr, S.MatApply):
        return f"({_expr(expr.matrix)})" + _applied_to(expr.arg)
    if isinstance(expr, S.Concat):
        return "[" + ", ".join(_expr(p) for p in expr.parts) + "]"
    if isinstance(expr, S.Call):
        callee = expr.callee if isinstance(expr.callee, str) else _expr(expr.callee)
        args = [_expr(a) for a in expr.args] + [f"{k}={_expr(v)}" for k, v in expr.kwargs]
        return f"{callee}({', '.join(args)})"
    raise TypeError(f"not an expression: {type(expr).__name__}")


def _is_operand(expr: S.Expr) -> bool:
    """Whether `expr` can follow a weight by juxtaposition (`W x`, `W[a, x]`, `V U x`)."""
    if isinstance(expr, (S.Var, S.Concat)):
        return True
    return isinstance(expr, S.Apply) and _is_operand(expr.arg)


def _applied_to(arg: S.Expr) -> str:
    """What follows a weight or a bracketed matrix: ` x`, `[a, x]`, ` @ tanh(s)`."""
    if isinstance(arg, S.Concat):
        return _expr(arg)
    if _is_operand(arg):
        return " " + _expr(arg)
    return " @ " + _at(arg, APPLY)


def _number(value: float) -> str:
    if value < 0 or math.copysign(1, value) < 0:
        return "-" + _number(-value)
    if value == int(value) and value < 1e16:
        return str(int(value))
    return repr(float(value))
