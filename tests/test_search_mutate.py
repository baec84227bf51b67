"""The first part of `seqdsl search`: cells printed back as source
(lang/unparse.py), mutations of their syntax trees (search/mutate.py),
duplicate detection by a canonical form of the step graph
(search/canonical.py) and the exploration that ties them (search/explore.py).
Nothing here trains or compiles: loading a cell is all that runs."""
import dataclasses
import pathlib
import random
import re

import pytest
from hypothesis import given, settings

from cellgen import cells
from seqdsl.errors import SeqError
from seqdsl.lang import syntax as S
from seqdsl.lang.parse import parse
from seqdsl.lang.unparse import unparse_cell, unparse_expr, unparse_module
from seqdsl.search import (MUTATIONS, canonical_form, canonical_key, check, explore, mutants,
                           reason)
from seqdsl.search.explore import UNPARSE_FAILED
from seqdsl.spec import loads

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "seqdsl" / "lang" / "library").glob("*.seq"))


def library_cell(name: str) -> S.CellDef:
    return parse((ROOT / "seqdsl" / "lang" / "library" / f"{name}.seq").read_text("utf-8"),
                 f"{name}.seq").definitions[0]


def cell_of(source: str):
    return loads(source, library=False).cell()


def same_lowered(a, b) -> bool:
    """Whether two checked cells are the same cell (names, graph, shapes, inits)."""
    return (str(a.graph), a.params, a.inits, [str(c) for c in a.constraints], a.symbols,
            a.states, a.inputs, a.output, a.sizes, a.scalars) == \
        (str(b.graph), b.params, b.inits, [str(c) for c in b.constraints], b.symbols,
         b.states, b.inputs, b.output, b.sizes, b.scalars)


def assert_round_trip(source: str) -> None:
    module = parse(source)
    printed = unparse_module(module)
    again = parse(printed)
    assert again.definitions == module.definitions, printed
    for d in module.definitions:
        if isinstance(d, S.CellDef):
            text = unparse_cell(d)
            try:
                expected = loads(source, library=False).cells[d.name]
            except SeqError as e:
                with pytest.raises(SeqError) as got:
                    loads(text, library=False)
                assert got.value.message == e.message
                continue
            assert same_lowered(loads(text, library=False).cell(), expected), text


# ---- unparse ---------------------------------------------------------------------

@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_unparse_round_trips_every_shipped_spec(path):
    assert_round_trip(path.read_text("utf-8"))


def doc_examples() -> list[str]:
    text = (ROOT / "docs" / "language.md").read_text("utf-8")
    return re.findall(r"```seq\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("source", doc_examples())
def test_unparse_round_trips_the_language_reference(source):
    """Transposes, matrix sums, scalars, sized values, repeat blocks, computed outputs."""
    assert_round_trip(source)


@settings(max_examples=150)
@given(cells())
def test_unparse_round_trips_generated_cells(source):
    assert_round_trip(source)


def test_unparse_reads_like_the_course():
    gru = (ROOT / "seqdsl" / "lang" / "library" / "gru.seq").read_text("utf-8")
    assert unparse_cell(library_cell("gru")) == "\n".join(
        line for line in gru.splitlines() if not line.startswith("#")) + "\n"


@pytest.mark.parametrize("written, printed", [
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("(a + b) * (c + d)", "(a + b) * (c + d)"),
    ("a * (b * c)", "a * (b * c)"),
    ("-(W x) * h", "-W x * h"),
    ("-(a + b)", "-(a + b)"),
    ("V·(x * 2)", "V @ (x * 2)"),
    ("W @ tanh(s)", "W @ tanh(s)"),
    ("V U x", "V U x"),
    ("Wc[Γr ⊙ c, x<t>]", "Wc[Γr * c, x<t>]"),
    ("(W - W.T - 0.5 * I) h", "(W - Wᵀ - 0.5 * I) h"),
    ("h / 4 + 1.5e-07", "h / 4 + 1.5e-07"),
])
def test_unparse_uses_only_the_parentheses_precedence_needs(written, printed):
    expr = parse(f"cell C {{\n input x\n state h : H\n h<t> = {written}\n}}").definitions[0] \
        .body[2].expr
    assert unparse_expr(expr) == printed
    reparsed = parse(f"cell C {{\n input x\n state h : H\n h<t> = {printed}\n}}").definitions[0]
    assert reparsed.body[2].expr == expr


def test_unparse_prints_every_statement_form():
    source = """cell Forms {
    input x, z
    state h, g : 16
    param α : 1 = -3
    param W ~ normal(0.1)
    param V
    m : M = A x * B h
    repeat 2 {
        h = tanh(first(W x) + U h + C m + D z)
    }
    g<t> = σ(α) * g + (1 - σ(α)) * h<t>
    output y<t> : Y = softmax(Wy h<t> + by)
}
"""
    assert unparse_cell(parse(source).definitions[0]) == source
    network = "network N {\n    input x : tokens\n    h = stack(GRU(H=4), depth=2)(x)\n" \
              "    output ŷ = softmax(Wy h<T> + by)\n}\n"
    assert unparse_module(parse(network)) == network


# ---- mutations ---------------------------------------------------------------------

# What a description of each kind says: the change and the equation it is in.
DESCRIBED = {
    "replace_activation": r"^replace (σ|tanh|relu|softplus|identity) by "
                          r"(σ|tanh|relu|softplus|identity) in \S+$",
    "add_term": r"^add (W\d+ \S+|b\d+|p\d+ \* \S+) to .+",
    "remove_term": r"^remove .+ from .+ in \S+$",
    "swap_operator": r"^replace (\+ by \*|\* by \+) in \S+: .+",
    "couple_gate": r"^replace (Γ\w|1 - Γ\w) by (1 - Γ\w|Γ\w) in \S+$",
    "reuse_gate": r"^use Γ\w in place of Γ\w in \S+$",
}


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_each_mutation_makes_a_valid_cell_and_says_what_changed(kind, name):
    cell = library_cell(name)
    rng = random.Random(7)
    labels = {st.target.name for st in cell.body if isinstance(st, S.Equation)}
    valid = []
    for _ in range(30):
        m = MUTATIONS[kind](cell, rng)
        assert m is not None and m.kind == kind
        assert m.cell != cell
        assert re.match(DESCRIBED[kind], m.description), m.description
        # The equation it names is one of the cell's.
        assert m.description.rsplit(" in ", 1)[-1].split(":")[0].removesuffix("<t>") in labels \
            or kind in ("add_term", "swap_operator")
        checked = check(m)
        if not isinstance(checked, str):
            valid.append(checked)
    assert valid, f"no valid {kind} mutant of {name}"
    assert cell == library_cell(name)  # the input is untouched


def test_mutations_change_what_they_describe():
    gru = library_cell("gru")
    m = MUTATIONS["reuse_gate"](gru, random.Random(0))
    assert m.description == "use Γr in place of Γu in c<t>"
    assert "c<t> = Γr * c̃ + (1 - Γu) * c" in unparse_cell(m.cell) \
        or "c<t> = Γu * c̃ + (1 - Γr) * c" in unparse_cell(m.cell)
    rng = random.Random(1)
    for _ in range(20):
        m = MUTATIONS["replace_activation"](gru, rng)
        old, new, where = re.match(r"replace (\S+) by (\S+) in (\S+)", m.description).groups()
        line = next(ln for ln in unparse_cell(m.cell).splitlines()
                    if ln.strip().startswith((f"{where} =", f"{where}<t> =")))
        if new != "identity":
            assert f"= {new}(" in line or f" {new}(" in line, (m.description, line)


def test_added_parameters_are_fresh_and_not_taken_for_typos():
    # `b` is an intermediate: `b1` would read as its misspelling, so another name is chosen.
    cell = parse("cell C {\n input x\n state h : H\n b = σ(W x + W1 h)\n"
                 " h<t> = tanh(b * h + c0)\n}").definitions[0]
    rng = random.Random(0)
    for _ in range(40):
        m = MUTATIONS["add_term"](cell, rng)
        assert not isinstance(check(m), str), (m.description, unparse_cell(m.cell))
        assert "W1 " not in m.description


def test_mutants_are_reproducible_from_a_seed():
    gru = library_cell("gru")
    first = [(m.description, m.cell) for m in mutants(gru, random.Random(42), 50)]
    again = [(m.description, m.cell) for m in mutants(gru, random.Random(42), 50)]
    other = [(m.description, m.cell) for m in mutants(gru, random.Random(43), 50)]
    assert first == again
    assert first != other
    cell, description = next(mutants(gru, random.Random(42), 1))
    assert (description, cell) == first[0]


# ---- canonical forms -----------------------------------------------------------------

GRU = (ROOT / "seqdsl" / "lang" / "library" / "gru.seq").read_text("utf-8")
GRU_RENAMED = """
cell Other {
    input z
    state h : K
    u = σ(bz + Uz[z, h])
    r = σ(Ur[h, z] + b_r)
    n = tanh(bn + Un[z, r * h])
    h<t> = (1 - u) * h + n * u
}
"""


def test_canonical_form_ignores_names_and_operand_order():
    assert canonical_form(cell_of(GRU)) == canonical_form(cell_of(GRU_RENAMED))
    regrouped = GRU.replace("σ(Wr[c, x] + br)", "σ(br + (Wr[c, x]))").replace(
        "Γu * c̃ + (1 - Γu) * c", "(1 - Γu) * c + c̃ * Γu")
    assert canonical_key(cell_of(regrouped)) == canonical_key(cell_of(GRU))
    rnn = "cell R {\n input x\n state a : H\n a<t> = tanh(%s)\n}"
    assert canonical_key(cell_of(rnn % "(W a + U x) + b")) == \
        canonical_key(cell_of(rnn % "W a + (b + U x)"))


def test_canonical_form_tells_different_cells_apart():
    keys = {}
    for path in LIBRARY:
        spec = loads(path.read_text("utf-8"))
        for name, ct in spec.cells.items():
            keys[name] = canonical_key(ct)
    assert len(set(keys.values())) == len(keys) >= 5, keys
    rnn = "cell R {\n input x\n state a : H\n a<t> = tanh(%s)\n}"
    distinct = ["W a + U x + b", "W a - U x + b", "U x - W a + b", "W a * U x + b",
                "W[a, x] + b", "W a + W x + b", "W a + U x"]
    forms = {canonical_key(cell_of(rnn % body)) for body in distinct}
    assert len(forms) == len(distinct)
    # The initial value of a parameter is part of the cell.
    assert canonical_key(cell_of(GRU)) != canonical_key(
        cell_of(GRU.replace("cell GRU {", "cell GRU {\n    param bu = 1")))


def test_canonical_form_reads_as_a_graph():
    form = canonical_form(cell_of(GRU))
    assert form.count("param p") == 6
    assert "= sigmoid(" in form and "= tanh(" in form
    assert form.splitlines()[-1].startswith("outputs ")


# ---- exploring ---------------------------------------------------------------------------

def test_exploring_the_gru_finds_200_distinct_valid_cells():
    result = explore(library_cell("gru"), random.Random(0), attempts=2000, distinct=200)
    assert len(result.valid) == 200 and result.attempts <= 2000
    assert result.attempts == len(result.valid) + result.duplicates + sum(result.invalid.values())
    assert UNPARSE_FAILED not in result.invalid
    assert len({c.key for c in result.valid}) == 200
    for reason_text in result.invalid:
        assert "\n" not in reason_text and not re.search(r"\d", reason_text)
    for c in result.valid[::20]:  # each is a cell a user could write and load
        assert canonical_key(cell_of(c.source)) == c.key
        assert c.mutant.description
    again = explore(library_cell("gru"), random.Random(0), attempts=2000, distinct=200)
    assert [c.source for c in again.valid] == [c.source for c in result.valid]
    assert again.invalid == result.invalid and again.duplicates == result.duplicates


def test_invalid_mutants_are_counted_by_reason():
    lstm = library_cell("lstm")
    result = explore(lstm, random.Random(5), attempts=300, steps=(2, 4))
    assert result.invalid, "a few hundred chains of mutations make some invalid cells"
    assert UNPARSE_FAILED not in result.invalid
    assert sum(result.invalid.values()) + len(result.valid) + result.duplicates == 300


def test_reason_blanks_names_and_numbers():
    source = ("cell C {\n input x\n state h : H\n c_tilde = tanh(W x)\n"
              " h<t> = c_tlde * h + c_tilde\n}")
    with pytest.raises(SeqError) as e:
        loads(source, library=False)
    assert "c_tlde" in e.value.message
    assert reason(e.value) == "`…` is not defined, so it would become a new parameter"


def renamed_and_commuted(cell: S.CellDef) -> S.CellDef:
    """The cell with every parameter renamed and the operands of every `+`
    and `*` swapped: the same cell for the canonical form."""
    defined = {n for st in cell.body for n in getattr(st, "names", ())}
    defined |= {st.target.name for st in cell.body if isinstance(st, (S.Equation, S.OutputDecl))}

    def name(n: str) -> str:
        if n in defined or n == "I":
            return n
        base = n.removesuffix(S.TRANSPOSE)
        return base + "_q" + (S.TRANSPOSE if n != base else "")

    def expr(e):
        if isinstance(e, S.Var):
            return dataclasses.replace(e, name=name(e.name))
        if isinstance(e, S.BinOp):
            left, right = expr(e.left), expr(e.right)
            return dataclasses.replace(e, left=right, right=left) if e.op in "+*" \
                else dataclasses.replace(e, left=left, right=right)
        if isinstance(e, S.Neg):
            return dataclasses.replace(e, arg=expr(e.arg))
        if isinstance(e, S.Apply):
            return dataclasses.replace(e, weight=name(e.weight), arg=expr(e.arg))
        if isinstance(e, S.MatApply):
            return dataclasses.replace(e, matrix=expr(e.matrix), arg=expr(e.arg))
        if isinstance(e, S.Concat):
            return dataclasses.replace(e, parts=tuple(expr(p) for p in e.parts))
        if isinstance(e, S.Call):
            return dataclasses.replace(e, args=tuple(expr(a) for a in e.args))
        return e

    def statement(st):
        if isinstance(st, S.ParamDecl):
            return dataclasses.replace(st, name=name(st.name))
        if isinstance(st, (S.Equation, S.OutputDecl)) and st.expr is not None:
            return dataclasses.replace(st, expr=expr(st.expr))
        return st

    return dataclasses.replace(cell, body=tuple(statement(st) for st in cell.body))


@settings(max_examples=100)
@given(cells())
def test_canonical_form_of_generated_cells_ignores_names_and_operand_order(source):
    cell = parse(source).definitions[0]
    twin = renamed_and_commuted(cell)
    assert canonical_form(cell_of(unparse_cell(twin))) == canonical_form(cell_of(source))


# ---- the copy of Tune's saved state (no Ray needed) ------------------------------------


def test_a_state_cut_short_by_a_kill_is_put_back_from_the_copy(tmp_path):
    import json
    import pickle

    from seqdsl.search import saved_state
    staging, storage, backup = tmp_path / "staging", tmp_path / "tune", tmp_path / "saved"
    staging.mkdir()
    storage.mkdir()
    state = {"experiment_state-1.json": json.dumps({"trials": [1, 2]}).encode(),
             "searcher-state-1.pkl": pickle.dumps(("generator", {"t1": 0})),
             "search_gen_state-1.json": b"{}"}
    for name, data in state.items():
        (staging / name).write_bytes(data)
    (staging / "trial-00001-GRU").mkdir()  # the trials' folders are not state files
    saved_state.snapshot(staging, backup)
    (staging / "experiment_state-1.json").write_bytes(b'{"trials": [1, 2, 3]}')
    saved_state.snapshot(staging, backup)  # a second slot; the first stays whole
    assert sorted(p.name for p in backup.iterdir()) == ["a", "b", "manifest.json"]

    for name, data in state.items():  # whole: nothing to repair
        (storage / name).write_bytes(data)
    assert saved_state.repair(storage, backup) is None

    (storage / "experiment_state-1.json").write_bytes(b"")  # as the kill left them
    (storage / "searcher-state-1.pkl").write_bytes(state["searcher-state-1.pkl"][:5])
    assert saved_state.repair(storage, backup) is not None
    assert (storage / "experiment_state-1.json").read_bytes() == b'{"trials": [1, 2, 3]}'
    assert (storage / "searcher-state-1.pkl").read_bytes() == state["searcher-state-1.pkl"]
    assert (backup / "broken" / "experiment_state-1.json").read_bytes() == b""  # nothing lost
    assert all(saved_state.loads(p) for p in saved_state.state_files(storage))


def test_no_repair_from_a_copy_that_is_not_whole(tmp_path):
    import json

    from seqdsl.search import saved_state
    staging, storage, backup = tmp_path / "staging", tmp_path / "tune", tmp_path / "saved"
    staging.mkdir()
    storage.mkdir()
    (staging / "experiment_state-1.json").write_bytes(b'{"a": 1}')
    (storage / "experiment_state-1.json").write_bytes(b"")
    assert saved_state.repair(storage, backup) is None  # no copy at all
    saved_state.snapshot(staging, backup)
    slot = json.loads((backup / "manifest.json").read_text())["slot"]
    (backup / slot / "experiment_state-1.json").write_bytes(b'{"a": 2}')  # not what was saved
    assert saved_state.repair(storage, backup) is None
    assert (storage / "experiment_state-1.json").read_bytes() == b""
