"""Graph passes: each leaves the values of a graph's outputs unchanged."""
from dataclasses import replace

import numpy as np
import pytest

from seqdsl.runtime.interp import evaluate
from seqdsl.ir.graph import Eqn, Lit, verify
from seqdsl.ir.passes import fold_zeros
from seqdsl.spec import instantiate, library_cells


def _zeroed(graph, names):
    """The graph with the equations making `names` replaced by `zeros`."""
    return replace(graph, eqns=tuple(Eqn(e.out, "zeros", ()) if e.out.name in names else e
                                     for e in graph.eqns))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "PeepholeLSTM"])
def test_folding_zero_products_keeps_every_output(cell):
    c = instantiate(library_cells()[cell], 5, 3)
    bwd = c.backward_graph
    # What the compiled backend knows is zero in the step: every product of a
    # cotangent with a weight block but one per operand.
    products = [e.out.name for e in bwd.eqns if e.op == "linear_t"]
    zero = set(products[1:])
    folded = verify(fold_zeros(bwd, zero))
    rng = np.random.default_rng(0)
    env = {v.name: rng.normal(size=(2,) + tuple(s.value() for s in v.shape))
           if v.kind == "batch" else rng.normal(size=tuple(s.value() for s in v.shape))
           for v in bwd.inputs + bwd.params}
    want = evaluate(_zeroed(bwd, zero), env, 2, np.float64)
    got = evaluate(folded, env, 2, np.float64)
    for v in bwd.outputs:
        np.testing.assert_allclose(got[v.name], want[v.name], rtol=1e-14, atol=0)
    assert [v.name for v in folded.outputs] == [v.name for v in bwd.outputs]
    # Nothing adds or multiplies a literal zero any more, and the sums got shorter.
    assert not any(isinstance(a, Lit) and a.value == 0 and e.op in ("add", "mul")
                   for e in folded.eqns for a in e.args)
    adds = lambda g: sum(e.op == "add" for e in g.eqns)  # noqa: E731
    assert adds(folded) < adds(bwd)


def test_an_output_that_folds_to_zero_stays_an_output():
    c = instantiate(library_cells()["LSTM"], 4, 3)
    bwd = c.backward_graph
    products = {e.out.name for e in bwd.eqns if e.op == "linear_t"}
    folded = verify(fold_zeros(bwd, products))
    d_x = folded.outputs[0]  # d x: every term of it is a product
    assert next(e for e in folded.eqns if e.out.name == d_x.name).op == "zeros"


def test_every_folding_rule_on_a_small_graph():
    from seqdsl.ir.graph import BATCH, Graph, Size, Var
    v = {n: Var(n, BATCH, (Size.of(3),)) for n in ("p", "q", "s1", "s2", "s3", "s4", "s5")}
    eqns = (Eqn(v["s1"], "add", (v["q"], v["p"])),   # 0 + p -> p
            Eqn(v["s2"], "mul", (v["p"], v["q"])),   # p * 0 -> 0
            Eqn(v["s3"], "add", (v["s1"], v["s2"])),  # p + 0 -> p
            Eqn(v["s4"], "div", (v["s2"], v["p"])),  # 0 / p -> 0
            Eqn(v["s5"], "sub", (v["s3"], v["s4"])))  # p - 0 -> p
    g = verify(Graph("g", (v["p"], v["q"]), (), eqns, (v["s4"], v["s5"])))
    folded = verify(fold_zeros(g, {"q"}))
    assert [(e.out.name, e.op) for e in folded.eqns] == [("s4", "zeros"), ("s5", "copy")]
    assert folded.eqns[1].args == (v["p"],)
    p = np.arange(6.0).reshape(2, 3) + 1
    got = evaluate(folded, {"p": p, "q": np.zeros((2, 3))}, 2, np.float64)
    want = evaluate(g, {"p": p, "q": np.zeros((2, 3))}, 2, np.float64)
    for n in ("s4", "s5"):
        np.testing.assert_array_equal(got[n], want[n])


def test_an_equation_known_to_be_zero_reads_what_its_argument_folded_to():
    from seqdsl.ir.graph import BATCH, Graph, Size, Var
    v = {n: Var(n, BATCH, (Size.of(3),)) for n in ("p", "q", "s1", "s2")}
    eqns = (Eqn(v["s1"], "add", (v["p"], v["q"])),  # p + 0 -> p
            Eqn(v["s2"], "neg", (v["s1"],)))  # known to be zero elsewhere; s1 is gone
    g = verify(Graph("g", (v["p"], v["q"]), (), eqns, (v["s2"],)))
    folded = verify(fold_zeros(g, {"q", "s2"}))
    assert [(e.out.name, e.op, e.args) for e in folded.eqns] == [("s2", "neg", (v["p"],))]
