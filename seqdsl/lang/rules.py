"""The language's rules that cells and networks both check: time indices,
calls, divisors, free names, and which free names look like typos."""
from __future__ import annotations

import difflib
import math
from functools import lru_cache

from . import syntax as S
from ..errors import Loc, SeqError, source_text

FUNCTIONS = {"sigmoid": "sigmoid", "σ": "sigmoid", "tanh": "tanh", "relu": "relu", "exp": "exp",
             "log": "log", "softplus": "softplus", "softmax": "softmax", "layernorm": "layernorm"}


def looks_like_typo(name: str, defined) -> str | None:
    """The defined names that `name` is probably a misspelling of, as
    "`a`" or "`a` or `b`", or None (see `Spellings`)."""
    return _spellings(tuple(defined)).near(name)


@lru_cache(maxsize=16)
def _spellings(defined: tuple[str, ...]) -> "Spellings":
    # Kept: a caller may look up many names against the same defined ones.
    return Spellings(defined)


# A Greek letter is typed as the Latin letter its name starts with: `Gu` for `Γu`.
_GREEK = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρσςτυφχψωϵϑϕ"
_LATIN = "ABGDEZETIKLMNXOPRSTUFCPOabgdezetiklmnxoprsstufcpoetf"
_TO_LATIN = str.maketrans(_GREEK, _LATIN)
# Near-miss candidates compared per name (defined or looked up) in one scope:
# real names have a few at most, so this only stops names made to defeat the
# index from taking quadratic time.
TYPO_COMPARISONS_PER_NAME = 10
TYPO_COMPARISONS_FREE = 10_000


class Spellings:
    """The names defined in one scope, indexed to find what a free name is
    probably a misspelling of in time linear in the number of names.

    Parameters are named after what they serve (`Wc`, `bc` beside `c`), so a
    free name counts as a typo of a defined name when both read alike once
    Greek letters are spelled in Latin and case is ignored (`Gu` for `Γu`,
    `C` for `c`), or when it is two characters or longer, starts like the
    defined name, and is one edit away from it (two for names of six
    characters or more): `c_tlde` for `c_tilde`, `Γf` or `Gf` where only `Γu`
    is defined. Only equally near names are offered.

    Candidates are found by pigeonhole: a defined name is cut into one more
    piece than the edits allowed, so a name within that many edits contains
    one of the pieces, at most that many places off. Each candidate is then
    compared with a bounded edit distance. Names that share so many pieces
    that the candidates exceed `TYPO_COMPARISONS_PER_NAME` per name are
    refused with an error rather than compared in quadratic time.
    """

    def __init__(self, defined):
        self.alike: dict[str, list[str]] = {}  # Latin, case-folded spelling -> names
        # (first letter, length, piece, text) -> names
        self.pieces: dict[tuple[str, int, int, str], list[str]] = {}
        self.compared = 0
        self.asked = 0
        self.order = {d: i for i, d in enumerate(dict.fromkeys(defined))}
        for d in self.order:
            key = d.translate(_TO_LATIN)
            self.alike.setdefault(key.casefold(), []).append(d)
            for i, (_, text) in enumerate(_pieces(len(key), key)):
                self.pieces.setdefault((key[0], len(key), i, text), []).append(d)

    def near(self, name: str, loc: Loc | None = None, source: str | None = None) -> str | None:
        key = name.translate(_TO_LATIN)
        self.asked += 1
        best = [d for d in self.alike.get(key.casefold(), ()) if d != name]
        if not best and len(name) >= 2:
            candidates = set(self._candidates(key)) - {name}
            self.compared += len(candidates)
            names = len(self.order) + self.asked
            if self.compared > TYPO_COMPARISONS_PER_NAME * names + TYPO_COMPARISONS_FREE:
                raise SeqError(f"too many names that look alike to check `{name}` for "
                               "misspellings", loc, source=source,
                               hint="give names that differ by more than two characters")
            found: dict[str, int] = {}
            for d in candidates:
                other = d.translate(_TO_LATIN)
                dist = _within(key, other, _limit(len(key), len(other)))
                if dist is not None:
                    found[d] = dist
            low = min(found.values(), default=None)
            best = [d for d, dist in found.items() if dist == low]
        return " or ".join(f"`{d}`" for d in sorted(best, key=self.order.get)) or None

    def _candidates(self, key: str):
        m = len(key)
        for n in range(max(1, m - 2), m + 3):
            k = _limit(m, n)
            if abs(m - n) > k:
                continue
            for i, (start, length) in enumerate(_pieces(n, None)):
                for shift in range(-k, k + 1):
                    at = start + shift
                    if 0 <= at and at + length <= m:
                        yield from self.pieces.get((key[0], n, i, key[at:at + length]), ())


def _limit(m: int, n: int) -> int:
    """Edits allowed between names of these lengths."""
    return 2 if min(m, n) >= 6 else 1


def _pieces(n: int, key: str | None):
    """Where a name of length n is cut: (start, text) for each piece, or
    (start, length) when no key is given. Three pieces from six characters on
    (two edits allowed), else two; a one-character name is one piece."""
    count = 1 if n == 1 else 3 if n >= 6 else 2
    cuts = [n * i // count for i in range(count + 1)]
    for a, b in zip(cuts, cuts[1:]):
        yield a, (key[a:b] if key is not None else b - a)


def _within(a: str, b: str, k: int) -> int | None:
    """The edit distance of a and b if it is at most k, else None. A common
    prefix and suffix cost nothing; past them the first characters differ,
    so one of the three edits comes first: at most 3^k small cases."""
    if abs(len(a) - len(b)) > k:
        return None
    n = min(len(a), len(b))
    start = 0
    while start < n and a[start] == b[start]:
        start += 1
    end = 0
    while end < n - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start:len(a) - end], b[start:len(b) - end]
    if not a or not b:
        return max(len(a), len(b))  # at most k: the lengths differ by at most k
    if k == 0:
        return None
    found = [_within(a[1:], b[1:], k - 1), _within(a[1:], b, k - 1), _within(a, b[1:], k - 1)]
    best = min((d for d in found if d is not None), default=None)
    return None if best is None else best + 1


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


def constant_value(e) -> float:
    """The value of a constant expression, in IEEE arithmetic: a quotient by
    zero or a result too large is infinite or NaN, never an exception."""
    if isinstance(e, S.Num):
        return e.value
    if isinstance(e, S.Neg):
        return -constant_value(e.arg)
    x, y = constant_value(e.left), constant_value(e.right)
    if e.op == "/":
        return x / y if y else math.copysign(math.inf, x) if x else math.nan
    return {"+": x + y, "-": x - y, "*": x * y}[e.op]


def check_divisor(node: S.BinOp, source: str) -> None:
    if not is_constant(node.right):
        raise SeqError("`/` divides by a number only", node.right.loc, source=source,
                       hint="write `a * b` or use `exp`/`log` for other quotients")
    value = constant_value(node.right)
    if value == 0:
        raise SeqError("division by zero", node.right.loc, source=source,
                       hint=None if isinstance(node.right, S.Num)
                       else f"`{source_text(source, node.right.loc)}` is 0")
    if not math.isfinite(value):
        raise SeqError(f"the divisor is {value} (not a finite number)", node.right.loc,
                       source=source)


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
    if name == "first":
        raise SeqError("`first(...)` marks what only the first micro-step computes; it is used "
                       "inside a `repeat` block", node.callee_loc, source=source,
                       hint="outside `repeat` write the expression itself")
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
