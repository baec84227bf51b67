"""fold_zeros, the pass the code generator runs on a backward step before
writing it, on IR text: each graph before and after."""
import textwrap

import pytest

from seqdsl.ir.graph import BATCH, MATRIX, Eqn, Graph, Lit, Size, Var, VerifyError, verify
from seqdsl.ir.passes import fold_zeros
from seqdsl.runtime.numba.plan import attach_backward, held_by_products, product_groups
from seqdsl.spec import instantiate, library_cells


def _vars(*names, n=3):
    return {v: Var(v, BATCH, (Size.of(n),)) for v in names}


def _text(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def test_a_zeros_equation_folds_into_what_reads_it():
    v = _vars("p", "z", "s1", "s2", "s3")
    g = verify(Graph("g", (v["p"],), (), (
        Eqn(v["z"], "zeros", ()),
        Eqn(v["s1"], "add", (v["p"], v["z"])),
        Eqn(v["s2"], "mul", (v["s1"], v["z"])),
        Eqn(v["s3"], "sigmoid", (v["s1"],))), (v["s2"], v["s3"])))
    assert str(g) == _text("""
        graph g
          inputs  p: B×3
          z: B×3 = zeros()
          s1: B×3 = add(p, z)
          s2: B×3 = mul(s1, z)
          s3: B×3 = sigmoid(s1)
          outputs s2, s3""")
    assert str(verify(fold_zeros(g))) == _text("""
        graph g
          inputs  p: B×3
          s2: B×3 = zeros()
          s3: B×3 = sigmoid(p)
          outputs s2, s3""")


def test_a_product_known_to_be_zero_leaves_the_sum_it_was_in():
    """The code generator's use: the first block's product holds the whole
    stacked product, so the second block's is zero in the step."""
    v = _vars("g1", "g2", n=2) | _vars("s1", "s2", "d_p")
    w = {n: Var(n, MATRIX, (Size.of(2), Size.of(3))) for n in ("W1", "W2")}
    cols = (("cols", (Size.of(0), Size.of(3))),)
    g = verify(Graph("g", (v["g1"], v["g2"]), (w["W1"], w["W2"]), (
        Eqn(v["s1"], "linear_t", (w["W1"], v["g1"]), cols),
        Eqn(v["s2"], "linear_t", (w["W2"], v["g2"]), cols),
        Eqn(v["d_p"], "add", (v["s1"], v["s2"]))), (v["d_p"],)))
    assert str(verify(fold_zeros(g, {"s2"}))) == _text("""
        graph g
          params  W1: 2×3, W2: 2×3
          inputs  g1: B×2, g2: B×2
          s1: B×3 = linear_t[0:3](W1, g1)
          s2: B×3 = linear_t[0:3](W2, g2)
          d_p: B×3 = copy(s1)
          outputs d_p""")


def _lstm_backward():
    cell = instantiate(library_cells()["LSTM"], 2, 1)
    fwd, bwd = cell.forward_graph, cell.backward_graph
    groups = product_groups(fwd, {"x"})
    return bwd, held_by_products(groups, attach_backward(groups, fwd, bwd))


def test_the_lstm_backward_step_before_and_after():
    """Of the eight products of a cotangent with a weight block, one per
    operand a step computes: the sums of the others go, x's gradient is all
    in its product after the loop."""
    bwd, held = _lstm_backward()
    assert held == {"s7", "s10", "s11", "s14", "s15", "s18", "s19"}
    folded = verify(fold_zeros(bwd, held))
    before, after = str(bwd).splitlines(), str(folded).splitlines()
    assert [line for line in before if line not in after] == [
        "  s20: B×1 = add(s7, s11)",
        "  s21: B×1 = add(s20, s15)",
        "  d_x: B×1 = add(s21, s19)",
        "  s22: B×2 = add(s6, s10)",
        "  s23: B×2 = add(s22, s14)",
        "  d_a<t-1>: B×2 = add(s23, s18)",
    ]
    assert [line for line in after if line not in before] == [
        "  d_x: B×1 = zeros()",
        "  d_a<t-1>: B×2 = copy(s6)",
    ]


@pytest.mark.parametrize("name", sorted(library_cells()))
def test_folding_is_done_once(name):
    cell = instantiate(library_cells()[name], 3, 2)
    fwd, bwd = cell.forward_graph, cell.backward_graph
    inputs = {n for n, _ in cell.type.inputs}
    groups = product_groups(fwd, inputs)
    folded = verify(fold_zeros(bwd, held_by_products(groups, attach_backward(groups, fwd, bwd))))
    assert fold_zeros(folded) == folded
    # What autodiff makes has no zero of its own to fold (a `zeros` is only ever a result).
    assert fold_zeros(bwd) == bwd


def test_a_zero_only_a_literal_reader_can_take_fails_verify():
    v = _vars("p", "z", n=2) | _vars("s1", n=4)
    g = verify(Graph("g", (v["p"],), (), (
        Eqn(v["z"], "zeros", ()),
        Eqn(v["s1"], "concat", (v["p"], v["z"]))), (v["s1"],)))
    with pytest.raises(VerifyError, match="literal"):
        verify(fold_zeros(g))
    assert isinstance(fold_zeros(g).eqns[0].args[1], Lit)
