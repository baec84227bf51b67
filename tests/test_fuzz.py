"""Fuzzing the front end: no input crashes or hangs it.

Inputs are the shipped specs and generated cells (`cellgen.cells`), mutated
by inserting, deleting, replacing and repeating pieces of text (tokens of the
language, numbers out of range, keywords, line separators such as U+2028, a
byte-order mark, NUL, direction marks), and random Unicode text. Each input
goes through what `seqdsl check` does (read the file, parse, check every cell
and network, list them) and what `seqdsl graph` does for every cell (lower,
differentiate, print as text and as DOT). Either all of it succeeds or it
stops with a SeqError that has a position in the file and renders; any other
exception fails, and so does one input under 10 KB taking a second or more
of CPU time (CPU time, so that a machine busy with other work does not fail
it; with the garbage collector paused, since its full collections scan all
the memory Hypothesis holds and took up to 0.6 s in long runs).

CI runs 2,000 inputs (derandomized under the "ci" profile, so a failure
reproduces). A longer run, for example 20,000 inputs:

    SEQDSL_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q -s tests/test_fuzz.py

(`-s` shows the summary line: inputs run, how many were accepted, the slowest.)
"""
import argparse
import contextlib
import gc
import io
import os
import pathlib
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cellgen import cells
from seqdsl.ir.autodiff import backward
from seqdsl.cli.check import run as _check
from seqdsl.ir.dot import to_dot
from seqdsl.errors import SeqError
from seqdsl.spec import load

EXAMPLES = int(os.environ.get("SEQDSL_FUZZ_EXAMPLES", "2000"))
SECOND_UNDER = 10_000  # bytes: inputs below this must take less than a second
SPECS = [p.read_text("utf-8") for p in
         sorted((pathlib.Path(__file__).parent.parent / "seqdsl" / "lang" / "library").glob("*.seq"))]

ODD = ["\u2028", "\u2029", "\ufeff", "\0", "\u200e", "\u200f", "\u202e", "\x0b", "\x0c",
       "\x1c", "\x85", "\r", "\r\n", "\t", "\u0303", "\u0302", "\u00a0", "\U0001F600"]
TOKENS = [
    "+", "-", "*", "/", "(", ")", "[", "]", "{", "}", "=", ",", ":", "~", "^", "@", "·", "⊙",
    "#", "\n", " ", "<t>", "<t-1>", "<T>", "<t+1>", "<t-2>", "<s>", "σ", "tanh(", "softmax(",
    "Γu", "Gu", "Γf", "C", "c̃", "c~", "ŷ", "y^", "x", "h", "a", "c", "W", "b",
    "cell", "network", "input", "state", "param", "output", "tokens", "stack(",
    "bidirectional(", "LSTM(H=4)", "GRU(H=3)", "depth=", "init=", "e<T>", "normal(0.1)",
    "0", "1", "2.5", ".5", "1e-3", "1e999", "1/0", "/ 0", "1e308 * 10", "9" * 30, "9" * 4400,
    "-" * 600, "[" * 600, "h + " * 600, "stack(" * 300, "bidirectional(" * 40,
]
PIECES = st.one_of(st.sampled_from(TOKENS), st.sampled_from(ODD), st.text(max_size=8),
                   st.lists(st.sampled_from(ODD + TOKENS[:30]), max_size=12).map("".join))


@st.composite
def mutated(draw, base) -> str:
    """`base` with up to six edits at random places."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat", "swap"]))
        if kind == "insert":
            text = text[:i] + draw(PIECES) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "replace":
            text = text[:i] + draw(PIECES) + text[j:]
        elif kind == "repeat" and j > i:  # long sums, deep nesting, many equations
            times = draw(st.integers(2, max(2, min(600, 8_000 // (j - i)))))
            text = text[:i] + text[i:j] * times + text[j:]
        elif kind == "swap":
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


SHIPPED = st.integers(0, len(SPECS) - 1).map(SPECS.__getitem__)  # short in reports
INPUTS = st.one_of(
    mutated(SHIPPED),
    mutated(cells(max_depth=2)),
    mutated(st.text(max_size=200)),
    mutated(SHIPPED.map("\ufeff".__add__)),
)

CELL = "cell A {{\n    input x\n    state h : H\n{body}\n}}\n"
NET = "network N {{\n    input x\n    h = {layer}(x)\n    output ŷ<t> = softmax(Wy h<t> + by)\n}}\n"
FOUND_BY_HAND = [  # what a fuzzer found before: each crashed, recursed or ran for minutes
    CELL.format(body="    h<t> = tanh(W x)\u2028 + h"),
    CELL.format(body="    h<t> = tanh(W x<t-" + "4" * 4301 + ">)"),
    NET.format(layer="LSTM(H=1e999)"),
    CELL.format(body="    h<t> = tanh(W x) * (1/0)"),
    CELL.format(body="    h<t> = " + " + ".join(["h"] * 487)),
    CELL.format(body="    h<t> = W " + "[" * 487 + "x" + "]" * 487),
    CELL.format(body="    h<t> = " + "-" * 487 + "h"),
    CELL.format(body="    h<t> = tanh(W x) * h" + "a" * 2000),
    NET.format(layer="stack(LSTM(H=4), depth=100000000)"),
    NET.format(layer="bidirectional(" * 300 + "LSTM(H=4)" + ")" * 300),
    "\ufeff" + SPECS[0],
]


class Tally:
    def __init__(self):
        self.runs = self.accepted = 0
        self.started = time.perf_counter()
        self.slowest = (0.0, 0, "")


TALLY = Tally()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.seq"
    path.write_text(SPECS[0], encoding="utf-8")
    front_end(path)  # once: building the parser and loading the library are not timed
    yield path
    took = time.perf_counter() - TALLY.started
    print(f"\nfuzzed {TALLY.runs:,} inputs in {took:.1f} s, {TALLY.accepted:,} accepted; "
          f"slowest {TALLY.slowest[0]:.3f} s of CPU ({TALLY.slowest[1]:,} bytes: "
          f"{TALLY.slowest[2][:120]!r}…)")


def front_end(path: pathlib.Path) -> None:
    """What `seqdsl check FILE` and `seqdsl graph FILE [--backward] [--format dot]` do."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _check(argparse.Namespace(file=str(path), network=None))
    for ct in load(str(path)).cells.values():
        for graph in (ct.graph, backward(ct.graph)):
            str(graph), to_dot(graph)


def found_by_hand(test):
    """`test` run on each of FOUND_BY_HAND first, every time."""
    for text in reversed(FOUND_BY_HAND):
        test = example(text)(test)
    return test


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(INPUTS)
@found_by_hand
def test_any_input_is_checked_or_refused_at_a_position_in_under_a_second(spec_file, text):
    data = text.encode("utf-8")
    spec_file.write_bytes(data)
    gc.disable()
    started = time.process_time()
    try:
        front_end(spec_file)
        TALLY.accepted += 1
    except SeqError as e:
        assert e.loc is not None, f"no position: {e.message}"
        assert e.loc.file == str(spec_file) and e.loc.line >= 1 and e.loc.col >= 1, e.loc
        e.render()
    finally:
        took = time.process_time() - started
        gc.enable()
    TALLY.runs += 1
    TALLY.slowest = max(TALLY.slowest, (took, len(data), text))
    if len(data) < SECOND_UNDER:
        assert took < 1.0, f"{took:.2f} s for {len(data):,} bytes"
