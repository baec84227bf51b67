"""The kernel plan: what the generated kernels compute, decided before a
line is written, as data. The emitters only write it out."""
import copy
import dataclasses

import pytest

from seqdsl.ir.graph import Eqn, Graph, Lit, Size, Var, verify
from seqdsl.ir.passes import fold_zeros
from seqdsl.runtime.numba import kernels
from seqdsl.runtime.numba.codegen import Stage
from seqdsl.runtime.numba.emit import Emission
from seqdsl.runtime.numba.emit_backward import emit_backward
from seqdsl.runtime.numba.emit_forward import emit_forward
from seqdsl.runtime.numba.kernel_plan import Ref, Target, describe, make_plan
from seqdsl.runtime.numba.plan import (Group, Member, attach_backward, held_by_products,
                                       product_groups)
from seqdsl.spec import instantiate, library_cells

# The plan is made from the symbolic step graphs: its sizes are forms over H and X.
H, X, ZERO = Size.of("H"), Size.of("X"), Size()
GATES = ("Wu", "Wf", "Wo", "Wc")


def _args(name, dtype="float64"):
    ct = library_cells()[name]
    cell = instantiate(ct, 4, 3)
    return (ct.name, cell.symbolic_forward, cell.symbolic_backward, [n for n, _ in ct.inputs],
            [n for n, _ in ct.states], ct.output, dtype)


def _plan(name, **kw):
    return kernels.plan(*_args(name, **kw))


@pytest.fixture(scope="module")
def lstm():
    return _plan("LSTM")


def test_lstm_stacks_the_four_gates_per_operand(lstm):
    a, x = lstm.groups["a<t-1>"], lstm.groups["x"]
    assert list(lstm.groups) == ["a<t-1>", "x"]
    assert [(m.weight, m.cols, m.offset) for m in a.members] == [
        (w, (ZERO, H), i * H) for i, w in enumerate(GATES)]
    assert [(m.weight, m.cols, m.offset) for m in x.members] == [
        (w, (H, H + X), i * H) for i, w in enumerate(GATES)]
    assert (a.width, a.size, a.hoisted) == (4 * H, H, False)
    assert (x.width, x.size, x.hoisted) == (4 * H, X, True)
    assert lstm.step_groups == [a]  # x's product is made for all steps before the loop
    # Each gate's pre-activation reads its block of both products.
    assert lstm.slices["t1"] == [("a<t-1>", ZERO), ("x", ZERO)]
    assert lstm.slices["t7"] == [("a<t-1>", 3 * H), ("x", 3 * H)]
    # Both groups' blocks have the same cotangents: one dY array serves both.
    assert [m.grad for m in a.members] == ["d_t2", "d_t4", "d_t6", "d_t8"]
    assert lstm.cotangents_in == {"a<t-1>": "a<t-1>", "x": "a<t-1>"}
    assert lstm.backward.stores["d_t8"] == [Target(Ref("dY_", "a<t-1>"), 3 * H)]


def test_lstm_tapes_what_the_backward_step_reads(lstm):
    assert lstm.taped == ["a<t-1>", "c<t-1>", "Γu", "Γf", "Γo", "c̃", "t11"]
    # The states are taped from their arrays before each step; the rest as made.
    assert lstm.forward.stores == {
        "a<t>": [Target(Ref("out"))],
        **{n: [Target(Ref("tape_", n))] for n in ("Γu", "Γf", "Γo", "c̃", "t11")}}
    assert lstm.zero_padded_tapes == set()


def test_lstm_argument_order(lstm):
    params = [f"[{p}]" for w in GATES for p in (w, "b" + w[1])]
    tapes = [f"tape_[{n}]" for n in lstm.taped]
    # Both take the sizes first: the values of the symbols every size is written over.
    sizes = ["n_[H]", "n_[X]"]
    assert lstm.sizes == ["H", "X"]
    assert [str(r) for r in lstm.forward_args] == sizes + ["[x]", "lengths", "[a]0",
                                                           "[c]0"] + params
    assert [str(r) for r in lstm.forward_returns] == [
        "out", "state_[a]", "state_[c]", "in_[x]"] + tapes
    assert [str(r) for r in lstm.backward_args] == sizes + [
        "dout", "d[a]", "d[c]", "lengths", "in_[x]"] + tapes + params
    assert [str(r) for r in lstm.backward_returns] == [
        "dx_[x]", "gstate_[a]", "gstate_[c]"] + [
        f"d_[{w}]" if i % 2 == 0 else f"vec_[d_b{w[1]}]" for w in GATES for i in range(2)]


def test_lstm_stages(lstm):
    assert [describe(s) for s in lstm.forward.stages] == [
        "product of a<t-1>",
        "loop over H: t1 t2 Γu t3 t4 Γf t5 t6 Γo t7 t8 c̃ t9 t10 c<t> t11 a<t>"]
    assert lstm.forward.buffers == ["c<t>", "a<t>"]
    stages = [describe(s) for s in lstm.backward.stages]
    # Every gate's cotangent is made (and stored to dY) before the one product reads them.
    assert stages[1:] == ["product of a<t-1>", "loop over H: d_a<t-1>"]
    assert stages[0].startswith("loop over H: d_Γo d_t11") and stages[0].endswith("d_t2 d_bu")
    assert lstm.backward.buffers == ["d_c<t-1>", "d_a<t-1>"]
    assert lstm.state_grads == {"a": "d_a<t-1>", "c": "d_c<t-1>"}
    assert lstm.accumulated == ["d_bc", "d_bo", "d_bf", "d_bu"]
    assert lstm.assigned_weights == set(GATES)


def test_lstm_backward_step_is_folded_before_emission(lstm):
    """The step product of a<t-1> is written under its first block's name
    and holds all four; x's gradient comes from its product after the loop."""
    _, fwd, bwd, *_ = _args("LSTM")
    products = [e.out.name for e in bwd.eqns if e.op == "linear_t"]
    assert lstm.held == set(products) - {"s6"}
    assert lstm.product_results == {"s6": "a<t-1>"}
    assert lstm.grad_from_product == {"x"}
    assert lstm.backward.graph == verify(fold_zeros(bwd, lstm.held))
    text = str(lstm.backward.graph)
    assert "d_x: B×X = zeros()" in text and "d_a<t-1>: B×H = copy(s6)" in text


def test_a_large_weight_is_applied_in_blocks_of_rows_counted_at_run_time():
    """The plan holds the bound, not a number of blocks: that depends on the
    sizes, which the kernels only get when they run (test_jit checks the
    count and the results)."""
    args = _args("LSTM")
    small = make_plan(*args, chunk_bytes=200, transposed_from_batch=8)
    assert small.chunk_bytes == 200
    assert dataclasses.replace(small, chunk_bytes=8 << 20) == make_plan(
        *args, chunk_bytes=8 << 20, transposed_from_batch=8)
    em = Emission(small)
    emit_forward(em)
    text = "\n".join(em.w.lines)
    assert "rows_a_prev = -(-ST_a_prev.shape[0] // -(-ST_a_prev.nbytes // 200))" in text


def test_gru_groups_a_product_of_the_step_and_shares_no_cotangents():
    gru = _plan("GRU")
    assert [(g.operand, g.hoisted, g.width) for g in gru.groups.values()] == [
        ("c<t-1>", False, 2 * H), ("x", True, 3 * H), ("t5", False, H)]
    assert gru.cotangents_in == {op: op for op in gru.groups}  # no two layouts alike
    # Γr ⊙ c<t-1> is made in the step, so its product waits for it.
    assert [describe(s) for s in gru.forward.stages][1:3] == [
        "loop over H: t1 t2 Γr t3 t4 Γu t5", "product of t5"]
    assert gru.backward.stores["d_t7"] == [Target(Ref("dY_", "x"), 2 * H),
                                           Target(Ref("dY_", "t5"), ZERO)]


# ---- the plan is data ----------------------------------------------------------------

PLAIN = (str, int, float, bool, type(None), Graph, Eqn, Var, Lit, Ref, Target, Group, Member,
         Stage)


def _plain(value, path="plan"):
    """Every leaf of `value` is plain data: no functions, no writers."""
    if isinstance(value, dict):
        for k, v in value.items():
            _plain(k, f"{path} key")
            _plain(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            _plain(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, (Graph, Eqn, Var, Lit)):
        for f in dataclasses.fields(value):
            _plain(getattr(value, f.name), f"{path}.{f.name}")
    else:
        assert isinstance(value, PLAIN), f"{path}: {type(value).__name__}"


@pytest.mark.parametrize("name", sorted(library_cells()))
def test_the_plan_is_plain_data_and_prints(name):
    plan = _plan(name)
    _plain(plan)
    assert plan == _plan(name)  # the same graphs, the same plan
    text = str(plan)
    assert text.startswith(f"kernels of cell {name} (") and "products:" in text
    # It names arrays by role and IR value; Python identifiers are the emitters' business.
    source = kernels.generate(*_args(name)).source
    for ident in ("tape_G_u", "P_a_prev", "dY_c_prev", "buf_c_t", "K0"):
        assert (ident in source) <= (ident not in text)


@pytest.mark.parametrize("name", sorted(library_cells()))
def test_emission_reads_the_plan_and_changes_nothing_in_it(name):
    plan = _plan(name)
    before = copy.deepcopy(plan)
    em = Emission(plan)
    emit_forward(em)
    emit_backward(em)
    assert plan == before
    assert em.module() == kernels.generate(*_args(name)).source


def test_the_held_products_are_the_same_before_and_after_folding():
    """The plan folds with the products held before folding, and reads the
    roles after it: both must name the same products."""
    for name in sorted(library_cells()):
        _, fwd, bwd, inputs, *_ = _args(name)
        groups = product_groups(fwd, set(inputs))
        held = held_by_products(groups, attach_backward(groups, fwd, bwd))
        folded = fold_zeros(bwd, held)
        assert held_by_products(groups, attach_backward(groups, fwd, folded)) == held, name


def test_the_dtype_changes_nothing_else_in_a_small_cell():
    p32 = _plan("LSTM", dtype="float32")
    assert p32.dtype == "float32"
    assert dataclasses.replace(p32, dtype="float64") == _plan("LSTM")


def test_a_dtype_that_is_not_floating_point_is_refused():
    with pytest.raises(ValueError, match="floating-point"):
        kernels.plan(*_args("LSTM", dtype="int64"))
