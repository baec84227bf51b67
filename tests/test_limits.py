"""The front end on input a hostile or careless user writes: every input is
checked or refused with a SeqError at a position, within the limits in
`seqdsl.lang.syntax`, without recursing deeply or taking quadratic time; typo
hints for Greek-Latin and case-only near misses; a byte-order mark, keywords
used as names and invisible characters get messages that say so."""
import inspect
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqdsl import SeqError, loads
from seqdsl.lang import syntax as S
from seqdsl.ir.autodiff import backward
from seqdsl.ir.dot import to_dot
from seqdsl.lang.parse import read_source
from seqdsl.lang.rules import Spellings

CELL = "cell A {{\n    input x\n    state h : H\n{body}\n}}\n"
NET = "network N {{\n    input x\n    h = {layer}(x)\n    output ŷ<t> = softmax(Wy h<t> + by)\n}}\n"


def refused(text: str) -> SeqError:
    """The error `text` is refused with; it has a position inside the text."""
    with pytest.raises(SeqError) as e:
        loads(text, "t.seq")
    err = e.value
    assert err.loc is not None and err.loc.file == "t.seq"
    assert 1 <= err.loc.line <= text.count("\n") + 1
    err.render()  # the caret line renders too
    return err


def everything(text: str) -> None:
    """What `check` and `graph` do: load, then print each cell's step and backward graph."""
    for ct in loads(text).cells.values():
        for g in (ct.graph, backward(ct.graph)):
            str(g), to_dot(g)


# ---- line separators, numbers ----------------------------------------------------

@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x0b", "\x1c", "\x1e", "\x85"])
def test_line_separators_other_than_newline_are_reported_where_they_are(sep):
    # str.splitlines breaks at these, the parser does not: the lines disagreed
    text = CELL.format(body=f"    h<t> = tanh(W x){sep} + h")
    err = refused(text)
    assert (err.loc.line, err.loc.col) == (4, 21) and f"U+{ord(sep):04X}" in err.message
    assert err.render().split("\n")[1] == "    " + text.split("\n")[3]


def test_an_error_after_a_form_feed_shows_its_own_line():
    # a form feed is blank space to the parser, but a line break to str.splitlines
    text = CELL.format(body="    h<t> = tanh(W x)\x0c + h\n    h<t> = h")
    err = refused(text)
    assert (err.loc.line, err.loc.col) == (5, 5) and "a second" in err.message
    assert err.render().splitlines()[1] == "        h<t> = h"


@pytest.mark.parametrize("text,message", [
    (CELL.format(body="    h<t> = tanh(W x<t-" + "4" * 4301 + ">)"), "at most 1,000,000"),
    (CELL.format(body="    h<t> = tanh(W x<t-1000001>)"), "at most 1,000,000"),
    ("cell A {\n    input x\n    state h : 99999999\n    h<t> = tanh(W x)\n}\n", "at most 1,000,000"),
    (CELL.format(body="    h<t> = tanh(W x) * 1e999"), "`1e999` is too large"),
    (CELL.format(body="    h<t> = tanh(W x) * " + "9" * 5000), "too large"),
    (NET.format(layer="LSTM(H=1e999)"), "`1e999` is too large"),
    (NET.format(layer="LSTM(H=" + "9" * 5000 + ")"), "too large"),
    (NET.format(layer="LSTM(H=1e300)"), "at most 1,000,000"),
])
def test_numbers_out_of_range_are_errors_with_the_limit(text, message):
    assert message in refused(text).message


@pytest.mark.parametrize("body,message,col", [
    ("    h<t> = tanh(W x) * (1/0)", "division by zero", 27),
    ("    h<t> = tanh(W x) / (2 - 2)", "division by zero", 25),
    ("    h<t> = tanh(W x) * (1e300 * 1e300)", "not a finite number (inf)", 25),
])
def test_constants_that_are_not_finite_are_errors_at_check_time(body, message, col):
    # they used to pass `check` and crash `graph` and `compile` printing the constant
    err = refused(CELL.format(body=body))
    assert message in err.message and (err.loc.line, err.loc.col) == (4, col)


def test_a_division_by_zero_in_a_head_is_an_error():
    text = NET.format(layer="LSTM(H=4)").replace("+ by)", "+ by / 0)")
    assert "division by zero" in refused(text).message


def test_large_finite_constants_print():
    everything(CELL.format(body="    h<t> = tanh(W x) * 1e300"))


# ---- nesting: clean refusals, and bounded recursion below the limit ---------------

@pytest.mark.parametrize("body", [
    "    h<t> = " + " + ".join(["h"] * 10_000),
    "    h<t> = " + " * ".join(["h"] * 487),
    "    h<t> = W " + "[" * 487 + "x" + "]" * 487,
    "    h<t> = " + "-" * 487 + "h",
    "    h<t> = " + "tanh(" * 487 + "h" + ")" * 487,
    "    h<t> = " + "W " * 487 + "x",
])
def test_deep_nesting_is_refused_with_the_limit(body):
    err = refused(CELL.format(body=body))
    assert f"more than {S.MAX_DEPTH} levels" in err.message and "intermediates" in err.hint


NESTED = {  # the deepest of each kind the limit lets through
    "sum": lambda n: CELL.format(body="    h<t> = " + " + ".join(["h"] * n)),
    "minus": lambda n: CELL.format(body="    h<t> = " + "-" * n + "h"),
    "brackets": lambda n: CELL.format(body="    h<t> = W " + "[" * n + "x" + "]" * n),
    "weights": lambda n: CELL.format(body="    h<t> = " + "W " * n + "x"),
    "calls": lambda n: CELL.format(body="    h<t> = " + "tanh(" * n + "h" + ")" * n),
    "divisor": lambda n: CELL.format(body="    h<t> = h / (" + "2 * " * n + "1)"),
    "stack": lambda n: NET.format(layer="stack(" * n + "GRU(H=4)" + ")" * n),
    "head": lambda n: NET.format(layer="GRU(H=4)").replace("Wy h<t>", "Wy " * n + "h<t>"),
}


def _deepest(make) -> str:
    n = S.MAX_DEPTH
    while True:
        try:
            loads(make(n))
            return make(n)
        except SeqError as e:
            assert "nested too deeply" in e.message, e
            n -= 1


@pytest.mark.parametrize("kind", list(NESTED))
def test_nesting_up_to_the_limit_needs_a_bounded_stack(kind):
    text = _deepest(NESTED[kind])
    depth = len(inspect.stack(0))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 700)  # what every stage together may use
    try:
        everything(text)
    finally:
        sys.setrecursionlimit(old)


def test_a_long_chain_of_intermediates_is_ordered_without_recursion():
    n = 3000
    body = " g0=tanh(W x)\n" + "".join(f" g{i}=g{i - 1}*2\n" for i in range(1, n))
    ct = loads(CELL.format(body=body + f" h<t>=g{n - 1}")).cell()
    assert len(ct.graph.eqns) == n + 2


def test_a_cycle_is_still_named():
    err = refused(CELL.format(body="    p = q * 2\n    q = r + h\n    r = p\n    h<t> = tanh(W x + p)"))
    assert "cycle among intermediates: p → q → r → p" in err.message


# ---- sizes of names, specs and networks ----------------------------------------------

def test_a_long_name_is_refused_at_once():
    name = "h" + "a" * 2000
    started = time.perf_counter()
    err = refused(CELL.format(body=f"    {name}1 = tanh(W x)\n    h<t> = {name}1 * {name}2"))
    assert time.perf_counter() - started < 1
    assert f"at most {S.MAX_NAME_CHARS}" in err.message and (err.loc.line, err.loc.col) == (4, 5)


def test_a_one_megabyte_spec_is_refused_in_under_a_second(tmp_path):
    text = CELL.format(body="\n".join(f"    g{i} = tanh(W{i} x)" for i in range(50_000)))
    assert len(text) > 1_000_000
    started = time.perf_counter()
    err = refused(text)
    assert time.perf_counter() - started < 1
    assert f"more than {S.MAX_SOURCE_CHARS:,} characters" in err.message
    f = tmp_path / "big.seq"
    f.write_text(text * 20, encoding="utf-8")  # 24 MB: refused without reading it whole
    with pytest.raises(SeqError) as e:
        read_source(str(f))
    assert "too large" in e.value.message and e.value.loc.line > 1


def test_stack_depth_and_network_size_have_limits():
    started = time.perf_counter()
    err = refused(NET.format(layer="stack(LSTM(H=4), depth=100000000)"))
    assert f"at most {S.MAX_STACK_DEPTH}" in err.message
    err = refused(NET.format(layer="bidirectional(" * 20 + "LSTM(H=4)" + ")" * 20))
    assert f"more than {S.MAX_NETWORK_CELLS:,} cells" in err.message
    err = refused(NET.format(layer="stack(stack(GRU(H=4), depth=100), depth=100)"))
    assert f"more than {S.MAX_NETWORK_CELLS:,} cells" in err.message
    assert "nested too deeply" in refused(NET.format(
        layer="bidirectional(" * 300 + "LSTM(H=4)" + ")" * 300)).message
    assert time.perf_counter() - started < 5
    nt = loads(NET.format(layer="stack(GRU(H=4), depth=100)")).networks["N"]
    assert len(nt.sequences["h"].children) == 100


# ---- typo hints: the index, and Greek-Latin and case-only near misses -----------------

def test_typo_hints_compare_few_names():
    # 4,000 intermediates and 4,000 parameters took a minute, comparing every pair
    defined = [f"g{i}" for i in range(4000)] + [f"gate_{i}" for i in range(4000)]
    s = Spellings(defined)
    assert all(s.near(f"W{i}") is None and s.near(f"b_gate{i}") is None for i in range(4000))
    assert s.compared == 0
    assert s.near("gatee_3999") == "`gate_3999`"


def test_names_made_to_defeat_the_index_are_refused_quickly():
    # all share their first pieces yet are two edits apart: every pair is a candidate
    body = "".join(f" gab{chr(0x4E00 + i)}=V x\n" for i in range(2000))
    body += " h<t>=W[" + ",".join(f"ga{chr(0x4E00 + i)}c" for i in range(2000)) + "]"
    started = time.perf_counter()
    err = refused(CELL.format(body=body))
    assert time.perf_counter() - started < 5
    assert "too many names that look alike" in err.message


def _plain_rule(name: str, defined: list[str]) -> str | None:
    """The typo rule, written out pair by pair (what `Spellings` indexes)."""
    latin = str.maketrans("ΓΔΣγδσ", "GDSgds")
    key = name.translate(latin)
    alike = [d for d in defined if d != name and d.translate(latin).casefold() == key.casefold()]
    if alike:
        return " or ".join(f"`{d}`" for d in alike)
    near = {}
    for d in defined:
        other = d.translate(latin)
        limit = 2 if min(len(key), len(other)) >= 6 else 1
        if d != name and len(name) >= 2 and other[0] == key[0]:
            dist = _distance(key, other)
            if dist <= limit:
                near[d] = dist
    best = min(near.values(), default=None)
    return " or ".join(f"`{d}`" for d, n in near.items() if n == best) or None


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


small_names = st.text("abgGΓdDΔsσ", min_size=1, max_size=9)


@given(st.lists(small_names, max_size=30, unique=True), small_names)
def test_the_index_finds_what_comparing_every_pair_finds(defined, name):
    assert Spellings(defined).near(name) == _plain_rule(name, defined)


LSTM_BODY = ("    input x\n    state a, c : H\n    Γu = σ(Wu[a, x] + bu)\n"
             "    Γf = σ(Wf[a, x] + bf)\n    Γo = σ(Wo[a, x] + bo)\n    c̃ = tanh(Wc[a, x] + bc)\n"
             "    c<t> = {update}\n    a<t> = Γo * tanh(c<t>)\n")


@pytest.mark.parametrize("update,bad,hint", [
    ("Gu * c̃ + Γf * c", "Gu", "did you mean `Γu`?"),
    ("Γu * c̃ + Gf * c", "Gf", "did you mean `Γf`?"),
    ("Γu * c̃ + Γf * C", "C", "did you mean `c`?"),
    ("Γu * c̃ + Γf * c + gu", "gu", "did you mean `Γu`?"),
])
def test_greek_latin_and_case_only_near_misses_are_typos(update, bad, hint):
    # they became new parameters, initialised to zeros, without a word
    err = refused("cell L {\n" + LSTM_BODY.format(update=update) + "}\n")
    assert f"`{bad}` is not defined" in err.message and hint in err.hint
    assert f"param {bad}" in err.hint


def test_a_latin_name_one_edit_from_greek_names_gets_them_all():
    body = "    Γu = σ(W x)\n    Γo = σ(V x)\n    h<t> = Γu * h + Gf * Γo"
    assert "did you mean `Γu` or `Γo`?" in refused(CELL.format(body=body)).hint


def test_a_declared_lookalike_is_a_parameter():
    text = "cell L {\n    param C\n    param Gu\n" + LSTM_BODY.format(
        update="Gu * c̃ + Γf * C") + "}\n"
    assert {"C", "Gu"} <= set(loads(text).cell().params)


# ---- byte-order mark, keywords, invisible characters --------------------------------

def test_a_byte_order_mark_is_accepted(tmp_path, run_cli):
    text = "\ufeff" + CELL.format(body="    h<t> = tanh(W x)")
    assert list(loads(text).cell().params) == ["W"]
    f = tmp_path / "bom.seq"
    f.write_bytes(text.encode("utf-8"))
    code, out, err = run_cli("check", f)
    assert code == 0 and "W  H×X" in out


def test_columns_on_the_first_line_ignore_the_byte_order_mark():
    err = refused("\ufeffcell A { input x }\n")
    assert (err.loc.line, err.loc.col) == (1, 1)
    assert err.render().splitlines()[1:3] == ["    cell A { input x }", "    " + "^" * 18]


@pytest.mark.parametrize("body,keyword,line,col", [
    ("    h<t> = tanh(W x)\n    output = h", "output", 5, 5),
    ("    h<t> = tanh(W x)\n    param = 3", "param", 5, 5),
    ("    state<t> = h\n    h<t> = tanh(W x)", "state", 4, 5),
    ("    h<t> = tanh(W x) * output", "output", 4, 24),
    ("    h<t> = tanh(input x)", "input", 4, 17),
])
def test_a_keyword_used_as_a_name_is_called_a_keyword(body, keyword, line, col):
    err = refused(CELL.format(body=body))
    assert err.message == f"`{keyword}` is a keyword and cannot be used as a name"
    assert (err.loc.line, err.loc.col) == (line, col)


@pytest.mark.parametrize("char,name", [("\0", "U+0000"), ("\u200f", "U+200F (RIGHT-TO-LEFT MARK)"),
                                       ("\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)")])
def test_an_invisible_character_is_named_by_its_code_point(char, name):
    err = refused(CELL.format(body=f"    h<t> = tanh(W x){char}"))
    assert err.message.startswith(f"unexpected character {name}")
    assert "invisible" in err.hint
