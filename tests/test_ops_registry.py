"""The op registry: every op has every facet, each facet works on a sample
equation, the generic code paths ask the registry only, and a new entry is
all an op needs."""
import ast
import pathlib
from dataclasses import replace

import numpy as np
import pytest

from opsamples import random_env, sample_graph, vjp_error
from seqdsl.ir.autodiff import backward
from seqdsl.ir.graph import BATCH, MATRIX, Graph, Lit, Size, verify
from seqdsl.ir.ops import (BACKWARD_ONLY, ELEMENTWISE, FAMILIES, FEATURE_WISE, OPS, Accumulate,
                           Op, Product, Row, Scalar)
from seqdsl.ir.ops.elementwise import elementwise
from seqdsl.lang.rules import FUNCTIONS
from seqdsl.runtime.interp import evaluate
from seqdsl.runtime.numba.codegen import GENERATOR_NAMES, size_code

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCH_SIZE = 3


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_every_facet(name):
    op = OPS[name]
    assert isinstance(op, Op) and op.name == name and op.doc
    assert op.family in FAMILIES
    assert op.arity is None or (isinstance(op.arity, int) and op.arity >= 0)
    assert callable(op.type) and callable(op.eval)
    # A VJP, or None saying "backward graphs only": never a default left unset.
    assert callable(op.vjp) or (op.vjp is None and name in BACKWARD_ONLY)
    assert isinstance(op.code, (Scalar, Row, Accumulate, Product))
    assert callable(op.flops) or (isinstance(op.flops, int) and op.flops >= 0)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_facet_works_on_a_sample_equation(name):
    op, graph = OPS[name], sample_graph(name)
    verify(graph)  # the shape rule accepts it and gives the result's declared type
    (e,) = graph.eqns
    env = random_env(graph, BATCH_SIZE, np.random.default_rng(0))
    y = evaluate(graph, env, BATCH_SIZE, np.float64)["y"]
    shape = tuple(s.value() for s in e.out.shape)
    assert y.shape == ((BATCH_SIZE,) + shape if e.out.kind == BATCH else shape)
    assert isinstance(op.count_flops(e), int) and op.count_flops(e) >= 0
    _check_code(op, e)


def _check_code(op, e) -> None:
    """The Numba code parses, and row code uses only the scratch names it
    declares; its sizes are run-time values, written by the `size` it is given
    (here over a variable `n9`), never numbers of its own."""
    if isinstance(op.code, Scalar):
        ast.parse(_code(op, e), mode="eval")
    elif isinstance(op.code, Row):
        source = _code(op, e)
        names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        # exp: seqdsl's, which every generated module imports (activations.py)
        allowed = set(op.code.scratch) | {"_k", "_b", "np", "exp", "max", "min", "range", "out",
                                          "K0", "K1", "K9", "DT", "n9"} | {f"a{i}" for i in
                                                                           range(len(e.args))}
        assert names <= allowed, names - allowed
        assert set(op.code.scratch) <= GENERATOR_NAMES


def _code(op, e) -> str:
    """The Numba code of `e`'s op over arguments `a0`, `a1`...: an expression
    at `_j` (a Scalar), or the lines of a row (a Row, over symbolic sizes)."""
    args = [f"a{i}[_b, {{j}}]" for i in range(len(e.args))]
    if isinstance(op.code, Scalar):
        return op.code([a.format(j="_j") for a in args])
    return "\n".join(op.code.write(_symbolic(e), "out[_b, {j}]", args, lambda v: "K9",
                                   lambda s: size_code(s, lambda k: "n9")))


def _symbolic(e):
    """`e` with every size a form over a symbol `N` (each number n becoming
    n·N): what a row writer meets in a size-generic kernel."""
    def over_n(s: Size) -> Size:
        return Size.of("N") * s.const if s.is_const() else s
    return Graph("g", (), (), (e,), ()).map_sizes(over_n).eqns[0]


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.vjp is not None))
def test_every_vjp_matches_finite_differences(name):
    graph = sample_graph(name)
    verify(backward(graph))
    rng = np.random.default_rng(1)
    env = random_env(graph, BATCH_SIZE, rng)
    assert vjp_error(graph, env, BATCH_SIZE, rng) < 1e-7


def test_backward_only_ops_are_those_without_a_vjp():
    assert set(BACKWARD_ONLY) == {n for n, op in OPS.items() if op.vjp is None}
    assert {"step", "softmax_vjp", "log_softmax_vjp", "layernorm_vjp", "linear_t", "outer",
            "bsum", "slice", "zeros", "tlinear_t", "touter", "fsum"} == set(BACKWARD_ONLY)


def test_every_language_function_is_a_registered_forward_op():
    for spelling, name in FUNCTIONS.items():
        assert name in OPS, spelling
        op = OPS[name]
        assert op.arity == 1 and op.vjp is not None, spelling
        assert op.family in (ELEMENTWISE, FEATURE_WISE), spelling


# ---- the generic code paths know no op by name ------------------------------------

GENERIC = ["seqdsl/runtime/interp.py", "seqdsl/ir/autodiff.py",
           "seqdsl/runtime/numba/codegen.py", "seqdsl/ir/dot.py"]


def _dispatch_on_op_names(tree: ast.AST) -> list[str]:
    """Comparisons with an `.op`, and tables keyed by op names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "op" for s in sides):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if sum(k in OPS for k in keys) >= 2:
                found.append(f"a table keyed by ops: {keys}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and node.slice.value in OPS:
            found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("path", GENERIC)
def test_generic_modules_ask_the_registry(path):
    tree = ast.parse((ROOT / path).read_text("utf-8"))
    assert _dispatch_on_op_names(tree) == []


def test_the_flop_count_asks_the_registry():
    tree = ast.parse((ROOT / "seqdsl/cli/compile.py").read_text("utf-8"))
    (flops,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_flops"]
    assert _dispatch_on_op_names(flops) == []


def test_the_check_sees_a_dispatch():
    tree = ast.parse('if e.op == "linear":\n    pass\nT = {"add": 1, "sub": 2}\nS["mul"]\n')
    assert len(_dispatch_on_op_names(tree)) == 3


# ---- a new op is one entry --------------------------------------------------------

def _cube_vjp(b, e, g):
    x = e.args[0]
    return [b.elementwise("mul", g, b.elementwise("mul", Lit(3.0), b.elementwise("mul", x, x)))]


CUBE = elementwise("cube", 1, "x³", lambda x: x * x * x, _cube_vjp, "({0}) * ({0}) * ({0})")


def test_a_new_elementwise_op_needs_only_its_entry(monkeypatch, tmp_path):
    """Registered alone, `cube` verifies, evaluates, differentiates, counts
    its FLOPs and compiles with Numba to what the interpreter computes."""
    from seqdsl.cli.compile import _flops
    from seqdsl.spec import instantiate, library_cells
    from test_jit import TOL, compare

    monkeypatch.setitem(OPS, "cube", CUBE)
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path))
    graph = sample_graph("cube")
    rng = np.random.default_rng(2)
    env = random_env(graph, BATCH_SIZE, rng, -1.5, 1.5)
    y = evaluate(graph, env, BATCH_SIZE, np.float64)["y"]
    assert np.allclose(y, env["x0"] ** 3, rtol=1e-15, atol=0)
    assert vjp_error(graph, env, BATCH_SIZE, rng) < 1e-7
    # The RNN with tanh swapped for cube, which now is in the cell's step.
    rnn = library_cells()["RNN"]
    eqns = tuple(replace(e, op="cube") if e.op == "tanh" else e for e in rnn.graph.eqns)
    ct = replace(rnn, graph=replace(rnn.graph, eqns=eqns))
    cell = instantiate(ct, 3, 2, backend="numba")
    assert "= cube(" in cell.source  # the equation's comment, over its statement
    assert _flops(cell)[1] > 0
    worst = compare(ct, np.float64, hidden=3, input=2, shapes=((4, 3), (2, 9)))
    assert max(worst.values()) < TOL[np.float64], worst


def test_an_unregistered_op_is_refused_everywhere():
    graph = sample_graph("tanh")
    bad = replace(graph, eqns=(replace(graph.eqns[0], op="cosh"),))
    with pytest.raises(Exception, match="unknown op"):
        verify(bad)
    with pytest.raises(KeyError):
        evaluate(bad, random_env(bad, 1, np.random.default_rng(0)), 1, np.float64)


def test_a_matrix_result_counts_whole():
    e = sample_graph("outer").eqns[0]
    assert e.out.kind == MATRIX and OPS["outer"].count_flops(e) == 2 * 3 * 6


def test_the_registry_imports_nothing_downstream():
    """The IR may use NumPy, never Numba, lark or the runtime: the Numba
    code of an entry is source text."""
    for path in (ROOT / "seqdsl/ir/ops").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("numba", "lark", "...", "seqdsl")), (path.name, name)


@pytest.mark.parametrize("name", ["exp", "softmax", "log_softmax", "log_softmax_vjp"])
def test_exponentials_call_the_vectorised_exp(name):
    """A loop calling NumPy's exp (a libm call) stays scalar; these ops' code
    calls activations.py's, which LLVM vectorises (test_activations.py)."""
    (e,) = sample_graph(name).eqns
    source = _code(OPS[name], e)
    calls = [n.func for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    assert any(isinstance(f, ast.Name) and f.id == "exp" for f in calls), source
    assert not any(isinstance(f, ast.Attribute) and f.attr == "exp" for f in calls), source
