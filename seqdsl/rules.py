"""The language's rules that cells and networks both check: time indices,
calls, divisors, free names, and which free names look like typos."""
from __future__ import annotations

import difflib

from . import syntax as S
from .errors import Loc, SeqError, source_text

FUNCTIONS = {"sigmoid": "sigmoid", "σ": "sigmoid", "tanh": "tanh", "relu": "relu", "exp": "exp",
             "log": "log", "softmax": "softmax", "layernorm": "layernorm"}


def looks_like_typo(name: str, defined) -> str | None:
    """The defined names that `name` is probably a misspelling of, as
    "`a`" or "`a` or `b`", or None.

    Parameters are named after what they serve (`Wc`, `bc` beside `c`), so a
    free name only counts as a typo when it starts like the defined name and
    is one edit away from it (two for long names): `c_tlde` for `c_tilde`,
    `Γf` where only `Γu` is defined.
    """
    near: dict[str, int] = {}
    for d in defined:
        if d == name or d[:1] != name[:1] or len(name) < 2:
            continue
        limit = 2 if min(len(d), len(name)) >= 6 else 1
        dist = _edit_distance(name, d)
        if dist <= limit:
            near[d] = dist
    if not near:
        return None
    best = min(near.values())
    return " or ".join(f"`{d}`" for d, dist in near.items() if dist == best)


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def check_time(var: S.Var, source: str, allow_T: bool = False) -> None:
    """Only `<t>` and `<t-1>` (and `<T>` in networks) are time indices."""
    t = var.time
    if t is None:
        return
    if t.base == "T" and t.offset == 0 and allow_T:
        return
    if t.base == "T":
        raise SeqError(f"`{var}`: `<T>` (each example's last step) is only meaningful in a network",
                       t.loc, hint="inside a cell, write `<t>` or `<t-1>`", source=source)
    if t.base != "t":
        raise SeqError(f"unknown time index `{t}`", t.loc,
                       hint="time indices are `<t>`, `<t-1>` and, in networks, `<T>`", source=source)
    if t.offset > 0:
        raise SeqError(f"`{var}` looks into the future: a step can read only `<t>` and `<t-1>`",
                       t.loc, hint="to read later steps, run the layer backwards with "
                       "bidirectional(...) in a network", source=source)
    if t.offset < -1:
        raise SeqError(f"`{var}` reaches {-t.offset} steps back: a step can read only `<t>` and `<t-1>`",
                       t.loc, hint="keep older values in states of their own", source=source)


def is_constant(e) -> bool:
    """A number, or arithmetic on numbers only: `2`, `-1`, `(2 * 3)`."""
    if isinstance(e, S.Num):
        return True
    if isinstance(e, S.Neg):
        return is_constant(e.arg)
    return isinstance(e, S.BinOp) and is_constant(e.left) and is_constant(e.right)


def check_divisor(node: S.BinOp, source: str) -> None:
    if not is_constant(node.right):
        raise SeqError("`/` divides by a number only", node.right.loc, source=source,
                       hint="write `a * b` or use `exp`/`log` for other quotients")


def check_free_name(name: str, loc: Loc, source: str) -> None:
    """A function's name cannot be a parameter: `tanh[s]` is a slip for `tanh(s)`."""
    if name in FUNCTIONS:
        raise SeqError(f"`{name}` is a function; it is called with parentheses", loc,
                       source=source, hint=f"write `{name}(...)`")


def check_call(node: S.Call, source: str) -> None:
    """A call in an equation must be one of the functions, with one argument."""
    if not isinstance(node.callee, str):
        raise SeqError("only a function can be called here", node.loc, source=source)
    name = node.callee
    if name not in FUNCTIONS:
        near = difflib.get_close_matches(name, list(FUNCTIONS), n=1, cutoff=0.6)
        if near:
            hint = f"did you mean `{near[0]}`?"
        else:
            arg = source_text(source, node.args[0].loc) if len(node.args) == 1 else "..."
            hint = (f"to apply a weight write `{name}[{arg}]`; the functions are "
                    + ", ".join(sorted(set(FUNCTIONS) - {"σ"})) + " and σ")
        raise SeqError(f"unknown function `{name}`", node.callee_loc, hint=hint, source=source)
    if node.kwargs:
        raise SeqError(f"`{name}` takes no keyword arguments", node.loc, source=source)
    if len(node.args) != 1:
        raise SeqError(f"`{name}` takes one argument, not {len(node.args)}", node.loc,
                       source=source)
