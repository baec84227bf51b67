"""The graph IR: golden text, verification, and the op tables."""
import json
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import SPECS
from seqdsl.ir import autodiff, ops
from seqdsl.runtime import interp
from seqdsl.ir.autodiff import backward
from seqdsl.ir.dot import to_dot
from seqdsl.ir.graph import BATCH, Eqn, Graph, Size, Var, VerifyError, verify
from seqdsl.spec import load

GOLDEN = pathlib.Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_golden_forward_and_backward_text(name):
    ct = load(f"seqdsl/lang/library/{name}.seq").cell()
    assert str(ct.graph) + "\n" == (GOLDEN / f"{name}.txt").read_text("utf-8")
    assert str(backward(ct.graph)) + "\n" == (GOLDEN / f"{name}.backward.txt").read_text("utf-8")


def test_weight_on_a_concatenation_stays_one_op():
    g = load("seqdsl/lang/library/lstm.seq").cell().graph
    assert "concat" not in {e.op for e in g.eqns}
    assert str(g.eqns[0]) == "t1: B×H = linear(Wu, a<t-1>, x)"


@pytest.mark.parametrize("path", [p for p in SPECS if load(str(p)).cells], ids=lambda p: p.name)
def test_every_graph_verifies(path):
    for ct in load(str(path)).cells.values():
        verify(ct.graph)
        verify(backward(ct.graph))


def test_every_op_is_in_every_table():
    assert set(ops.OPS) == set(autodiff.RULES) == set(interp.EVAL)
    forward_ops = set(ops.OPS) - set(ops.BACKWARD_ONLY)
    assert all(autodiff.RULES[op] is not None for op in forward_ops)


def test_forward_graphs_use_only_forward_ops_and_backward_graphs_may_use_all():
    for p in SPECS:
        for ct in load(str(p)).cells.values():
            assert {e.op for e in ct.graph.eqns} <= set(ops.OPS) - set(ops.BACKWARD_ONLY)
            assert {e.op for e in backward(ct.graph).eqns} <= set(ops.OPS)


def _g(eqns, inputs, params=(), outputs=None):
    return Graph("T", tuple(inputs), tuple(params), tuple(eqns),
                 tuple(outputs if outputs is not None else [eqns[-1].out]))


def test_verify_rejects_broken_graphs():
    H, X = Size.of("H"), Size.of("X")
    x, h = Var("x", BATCH, (X,)), Var("h", BATCH, (H,))
    y = Var("y", BATCH, (H,))
    with pytest.raises(VerifyError, match="different shapes"):
        verify(_g([Eqn(y, "add", (x, h))], [x, h]))
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(_g([Eqn(y, "tanh", (Var("z", BATCH, (H,)),))], [h]))
    with pytest.raises(VerifyError, match="assigned twice"):
        verify(_g([Eqn(y, "tanh", (h,)), Eqn(y, "sigmoid", (h,))], [h]))
    with pytest.raises(VerifyError, match="unknown op"):
        verify(_g([Eqn(y, "cosh", (h,))], [h]))
    with pytest.raises(VerifyError, match="should have type"):
        verify(_g([Eqn(Var("y", BATCH, (X,)), "tanh", (h,))], [h]))
    w = Var("W", "matrix", (H, H))
    with pytest.raises(VerifyError, match="columns"):
        verify(_g([Eqn(y, "linear", (w, x))], [x], [w]))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` program is not "
                    "installed (apt install graphviz; CI installs it)")
def test_dot_output_is_accepted_by_graphviz():
    dot = to_dot(load("seqdsl/lang/library/gru.seq").cell().graph)
    done = subprocess.run(["dot", "-Tjson"], input=dot, capture_output=True, text=True, check=True)
    assert done.stderr == ""
    drawn = json.loads(done.stdout)
    names = {n["name"] for n in drawn["objects"]}
    assert len([n for n in names if re.fullmatch(r"n\d+", n)]) == 8 + 14  # values in, equations
    assert len(drawn["edges"]) > 16
