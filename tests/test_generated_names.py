"""Generated source is data, never code from the user: names from a spec
(size symbols among them) become identifiers only through the one
allocator (`Names`), and text from the user (names in comments) only
escaped; the spec's path and the sizes' values never reach the source. Hostile names (keywords, builtins,
the generator's own names, names that transliterate alike) must give source
that compiles, and kernels that match the reference."""
import ast
import os
import re
import runpy
import unicodedata

import numpy as np
import pytest
from hypothesis import Phase, assume, example, given, settings
from hypothesis import strategies as st

from seqdsl import SeqError, instantiate, load, loads
from seqdsl.runtime.numba.codegen import GENERATOR_NAMES, RESERVED, Names, comment, docstring, escaped
from seqdsl.runtime.numba.kernels import generate
from seqdsl.runtime.numpy import UnknownSizeWarning
from test_jit import TOL, compare

BUILTINS_CALLED = {"range", "min", "max"}  # builtins the generated code calls
# Examples whose kernels are compiled (each costs a Numba compile).
NUMBA_EXAMPLES = int(os.environ.get("SEQDSL_NAME_EXAMPLES", "2"))


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    os.environ["SEQDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


# One name per role; every role's name reaches the generated source.
TEMPLATE = """cell Gen {{
    input {x}
    state {h}, {c} : H
    param {W1}
    param {W2}
    param {b1}
    param {b2} = 1
    {g} = σ({W1}[{h}, {x}] + {b1})
    {v} = {b1} * {b2}
    {c}<t> = {g} * tanh({W2}[{h}, {x}] + {v}) + (1 - {g}) * {c}
    {h}<t> = {g} * layernorm({c}<t>) + {b2}
    output {h}
}}
"""
ROLES = ("x", "h", "c", "W1", "W2", "b1", "b2", "g", "v")

# The findings: a keyword, a Georgian letter that transliterates to `in`,
# `__import__` (→ `import`), `a0`/`da` beside state `a`, `h0`/`dh` beside
# state `h`, vectors shadowing builtins the generated code calls.
ISSUE = dict(x="ი", h="a", c="h", W1="lambda", W2="__import__", b1="a0", b2="da", g="range",
             v="min")
INTERNALS = dict(x="x", h="h", c="c", W1="np", W2="out", b1="h0", b2="dh", g="max",
                 v="lengths")
# Lookalikes: Greek ξ and `xi`, Cyrillic а and Latin a, c̃ and `c_tilde`; a
# generated buffer's name; a constant's name; a loop index.
LOOKALIKES = dict(x="ξ", h="xi", c="а", W1="a", W2="K0", b1="buf_xi_t", b2="c̃", g="c_tilde",
                  v="_t")

HOSTILE = sorted(
    {"lambda", "in", "import", "class", "None", "True", "match", "case", "_", "range", "min",
     "max", "print", "len", "abs", "sum", "type", "object", "__import__", "__builtins__",
     "exec", "eval", "open"} | GENERATOR_NAMES | {"K0", "K1", "K2", "K9"}
    | {"x0", "h0", "c0", "dh", "dc", "dx", "d_x", "d_h", "d_W1", "buf_h_t", "tape_h_prev",
       "P_x", "PT_h_prev", "ST_x", "S_h_prev", "dY_h_prev", "dP_h_prev", "dPT_h_prev",
       "acc_d_b1", "vec_v", "gstate_h", "in_x", "state_h", "dx_x", "h_t", "h_prev", "t1", "s1",
       "v", "v1", "a", "G_u", "c_tilde", "xi", "alpha", "xalpha"}
    | {"ი", "ξ", "Ξ", "Γu", "c̃", "ŷ", "а", "ℓ", "一", "ｘ", "xα", "Α", "aα", "aа", "x̂"})
FIRST = "abxKPST_αβξΓаеიბ一ｘℓ"  # what a name may start with, in several scripts
LETTERS = FIRST + "019\u0303\u0302"


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


names = st.one_of(st.sampled_from(HOSTILE),
                  st.builds(str.__add__, st.sampled_from(FIRST), st.text(LETTERS, max_size=4)))
cell_names = st.lists(names, min_size=len(ROLES), max_size=len(ROLES),
                      unique_by=_nfc).map(lambda ns: dict(zip(ROLES, ns)))


def _cell_or_reject(names: dict[str, str]):
    """The cell with these names, or a rejected example where the language
    refuses them (that is the checker's business, not the generator's)."""
    try:
        ct = loads(TEMPLATE.format(**names), "generated.seq").cell("Gen")
        return ct, instantiate(ct, 3, 2)
    except SeqError:
        assume(False)


def _generated(cell):
    ct = cell.type
    return generate(ct.name, cell.symbolic_forward, cell.symbolic_backward,
                    [n for n, _ in ct.inputs], [n for n, _ in ct.states], ct.output,
                    cell.dtype.name)


def _names_in(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
    return found


def _assert_only_allocated_names(gen) -> None:
    """Every identifier of the module is one the allocator handed out, a
    constant, or one of the generator's own names; none it handed out is
    reserved. So the reserved list is complete and nothing can shadow."""
    tree = ast.parse(gen.source)
    constant = re.compile(r"K\d+")
    stray = {n for n in _names_in(tree) - gen.identifiers - GENERATOR_NAMES - BUILTINS_CALLED
             if not constant.fullmatch(n)}
    assert not stray, stray
    clash = {n for n in gen.identifiers if n in RESERVED or constant.fullmatch(n)}
    assert not clash, clash


# ---- the allocator and the escaping, alone (cheap) ----------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(names, min_size=1, max_size=12, unique=True))
def test_names_are_unique_identifiers_that_shadow_nothing(ns):
    py = Names()
    roles = [("", n, "") for n in ns] + [(p, n, s) for n in ns
                                         for p, s in (("", "0"), ("d", ""), ("buf_", ""))]
    got = [py.role(*r) for r in roles]
    assert len(set(got)) == len(got)  # one identifier per (role, name)
    for ident in got:
        assert ident.isidentifier() and ident.isascii(), ident
        assert ident not in RESERVED and not re.fullmatch(r"K\d+", ident), ident
    assert [py.role(*r) for r in roles] == got  # the same each time asked


def test_names_read_like_hand_written_code():
    py = Names()
    assert [py(n) for n in ("Γu", "c̃", "a<t-1>", "a<t>", "d_c<t>", "x")] == [
        "G_u", "c_tilde", "a_prev", "a_t", "d_c_t", "x"]
    assert py.role("buf_", "a<t>") == "buf_a_t" and py.role("", "a", "0") == "a0"
    assert [Names()(n) for n in ("lambda", "ი", "__import__", "range")] == [
        "lambda_", "in_", "import_", "range_"]


@settings(max_examples=500, deadline=None)
@given(st.text())
@example("\"\"\"\nimport os\n\"\"\"")
@example("C:\\Users\\x\\Nname\\")
@example("a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\rh\x00i\ud800")
def test_escaped_text_is_one_line_of_data(text):
    assert ast.literal_eval(docstring(text)) == text
    assert len(comment(text).splitlines()) == 1 and comment(text).startswith("# ")
    # a comment ends at the end of its line, whatever the user wrote
    assert ast.literal_eval("1  " + comment(text) + "\n") == 1
    assert escaped("Γu: B×8 = sigmoid(t2)") == "Γu: B×8 = sigmoid(t2)"  # stays readable


# ---- generated modules (compiled by Python only: cheap) -------------------------------

@settings(max_examples=300, deadline=None)
@given(cell_names)
@example(ISSUE)
@example(INTERNALS)
@example(LOOKALIKES)
def test_any_accepted_names_give_source_that_compiles(names):
    _, cell = _cell_or_reject(names)
    gen = _generated(cell)
    compile(gen.source, "<generated>", "exec")
    _assert_only_allocated_names(gen)


# Size symbols the language accepts that are the generator's own names,
# builtins, keywords, a value's name, or read like the size variables.
SYMBOLS = ["np", "DT", "K0", "_T", "range", "lengths", "lambda", "forward", "x", "h", "n_x",
           "n_H", "Γ", "ξ"]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_size_symbols_become_identifiers_only_through_names(tmp_path, symbol):
    ct = loads(TEMPLATE.format(**INTERNALS).replace(": H", f": {symbol}"), "g.seq").cell("Gen")
    gen = _generated(instantiate(ct, 3, 2))
    assert gen.sizes == (symbol, "X")
    # The header names no size: the kernels take them (as n_<symbol>) when they run.
    header = ast.get_docstring(ast.parse(gen.source), clean=False)
    assert header == "cell Gen (float64), generated by seqdsl"
    assert gen.source.splitlines()[1] == "import numpy as np"
    _assert_only_allocated_names(gen)
    forward = next(n for n in ast.parse(gen.source).body if getattr(n, "name", "") == "forward")
    size_args = [a.arg for a in forward.args.args[:2]]
    assert set(size_args) <= gen.identifiers and symbol not in size_args
    module = tmp_path / "generated.py"
    module.write_text(gen.source, "utf-8")
    runpy.run_path(str(module))  # defines the kernels (Numba compiles them on first call)


def test_a_hostile_size_symbol_compiles_and_matches_the_reference():
    ct = loads(TEMPLATE.format(**INTERNALS).replace(": H", ": np"), "g.seq").cell("Gen")
    worst = compare(ct, np.float64, hidden=3, input=2, shapes=((4, 3), (2, 9)))
    assert max(worst.values()) < TOL[np.float64], worst


# ---- compiled kernels against the reference (each example a Numba compile) ---------------

@settings(max_examples=NUMBA_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(cell_names)
@example(ISSUE)
@example(INTERNALS)
@example(LOOKALIKES)
def test_hostile_names_compile_and_match_the_reference(names):
    ct, _ = _cell_or_reject(names)
    worst = compare(ct, np.float64, hidden=3, input=2, shapes=((4, 3), (2, 9)))
    bad = {k: v for k, v in worst.items() if v > TOL[np.float64]}
    assert not bad, f"{bad}\n{names}"


RNN = "cell R {\n    input x\n    state h : H\n    h<t> = tanh(W[h, x] + b)\n    output h\n}\n"


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """Python that would create a file if it ever ran (a relative path: it
    may stand in a folder's name), and that file."""
    monkeypatch.chdir(tmp_path)
    return 'open("pwned", "w")', tmp_path / "pwned"


@pytest.mark.parametrize("folder", ['odd"""\n{payload}\n"""', "odd\\Nname", "C:\\Users\\"])
def test_a_spec_path_never_reaches_the_source(tmp_path, folder, payload):
    code, pwned = payload
    where = tmp_path / folder.format(payload=code)
    where.mkdir()
    (where / "r.seq").write_text(RNN, "utf-8")
    ct = load(str(where / "r.seq")).cell("R")
    cell = instantiate(ct, 4, 3, backend="numba")
    assert not pwned.exists()
    assert "odd" not in cell.source and "Users" not in cell.source
    worst = compare(ct, np.float64)
    assert max(worst.values()) < TOL[np.float64], worst


def test_a_size_name_is_never_code(payload):
    code, pwned = payload
    ct = loads(RNN).cell("R")
    # A size the cell does not have is dropped with a warning before any code
    # is generated; test_size_names_and_values_in_the_header_stay_text gives
    # the generator such names directly.
    with pytest.warns(UnknownSizeWarning, match="has no size"):
        cell = instantiate(ct, 4, 3, sizes={f'Q"""+{code}.name+"""': 5}, backend="numba")
    assert not pwned.exists() and "pwned" not in cell.source
    compile(cell.source, "<generated>", "exec")
    ref = instantiate(ct, 4, 3)
    x, p = np.ones((3, 2, 3)), ref.init_params()
    np.testing.assert_allclose(cell.forward(p, x).outputs, ref.forward(p, x).outputs,
                               rtol=1e-12)


def test_cli_compile_runs_no_code_from_a_path_or_a_size(tmp_path, run_cli, payload):
    code, pwned = payload
    where = tmp_path / f'odd"""\n{code}\n"""\\N'
    where.mkdir()
    (where / "r.seq").write_text(RNN, "utf-8")
    status, out, err = run_cli("compile", where / "r.seq", "--size", f'Q"""+{code}.name+"""=5',
                               "--emit", "source")
    assert not pwned.exists()
    assert status in (0, 1) and "Traceback" not in err, err
    if status == 0:
        compile(out, "<generated>", "exec")
