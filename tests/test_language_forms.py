"""The forms that let a cell be written as its paper writes it
(docs/language.md §6): sized intermediates, transposes and matrix sums,
learned scalars, `repeat` micro-steps and computed outputs.

The cells are the section's own examples, read from the page, plus an Elman
net with a projection; each gradient-checks on both backends and the
compiled forward and gradients equal the reference's.
"""
import pathlib
import re

import numpy as np
import pytest

from seqdsl.spec import instantiate, loads
from seqdsl.tools.gradcheck import TOLERANCE, gradcheck, random_problem

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "language.md"
SECTION = DOC.read_text("utf-8").split("\n## 6. ")[1].split("\n## 7. ")[0]
PAPERS = {name: src for name, src in (
    (m.group(1), m.group(0)[len("```seq\n"):-3])
    for m in re.finditer(r"```seq\n(?:#[^\n]*\n)*cell (\w+) \{\n.*?```", SECTION, re.S))}
PAPERS["ElmanProjection"] = """
# Elman net with a projection: r = Wp h<t-1>, h<t> = tanh(Wx x + Wr r + b)
cell ElmanProjection {
    input x
    state h : H
    r : R = Wp h
    h<t> = tanh(Wx x + Wr r + b)
}
"""
SIZES = {"M": 3, "R": 2, "Y": 5}


def cell_type(name):
    return loads(PAPERS[name], f"{name}.seq").cell()


def make(ct, backend="numpy", dtype=np.float64, hidden=4, input=3):
    sizes = {k: v for k, v in SIZES.items() if k in ct.symbols}
    return instantiate(ct, hidden, input, sizes, dtype=dtype, backend=backend)


def test_the_section_shows_each_form():
    assert set(PAPERS) == {"mLSTM", "AntisymmetricRNN", "FastRNN", "RHN", "RNNLM",
                           "ElmanProjection"}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(PAPERS))
def test_paper_cells_gradcheck(name, backend):
    cell = make(cell_type(name), backend)
    errors = gradcheck(cell, random_problem(cell, steps=4, batch=3, seed=7))
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]:.2e}"


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_paper_cells_compiled_equal_the_reference(name):
    ct = cell_type(name)
    ref, jit = make(ct), make(ct, "numba")
    pb = random_problem(ref, steps=5, batch=4, seed=3)
    r1 = ref.forward(pb.params, pb.x, pb.lengths, pb.state0)
    r2 = jit.forward(pb.params, pb.x, pb.lengths, pb.state0)
    np.testing.assert_allclose(r2.outputs, r1.outputs, rtol=1e-12, atol=1e-14)
    g1 = ref.backward(pb.params, r1, pb.w_out, pb.w_final)
    g2 = jit.backward(pb.params, r2, pb.w_out, pb.w_final)
    for k in g1.params:
        np.testing.assert_allclose(g2.params[k], g1.params[k], rtol=1e-10, atol=1e-12,
                                   err_msg=k)


def test_a_sized_intermediate_has_its_own_size():
    ct = cell_type("mLSTM")
    assert "M" in ct.symbols and str(ct.sizes["m"]) == "M"
    cell = instantiate(ct, 4, 3, {"M": 7})
    assert cell.param_shapes["Wmx"] == (7, 3) and cell.param_shapes["Wim"] == (4, 7)
    proj = make(cell_type("ElmanProjection"))
    assert proj.param_shapes["Wp"] == (2, 4) and proj.param_shapes["Wr"] == (4, 2)


# The antisymmetric recurrence without its tanh, so that the matrix it
# applies can be read off its output, and the same cell with a free matrix A.
LINEAR = """
cell Anti {
    input x
    state h : H
    h<t> = (W - Wᵀ - 0.01 * I) h + V x
}
cell Free {
    input x
    state h : H
    h<t> = A h - 0.01 * h + V x
}
"""


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_antisymmetric_matrix_and_its_gradient(backend):
    spec = loads(LINEAR, "anti.seq")
    anti = instantiate(spec.cells["Anti"], 5, 3, backend=backend)
    free = instantiate(spec.cells["Free"], 5, 3, backend=backend)
    assert set(anti.param_shapes) == {"W", "V"}  # Wᵀ is W: one parameter
    rng = np.random.default_rng(0)
    W, V = rng.normal(size=(5, 5)), rng.normal(size=(5, 3))
    # One step from each basis vector with x = 0: the columns of the matrix.
    step = anti.forward({"W": W, "V": V}, np.zeros((1, 5, 3)), state0={"h": np.eye(5)})
    M = step.outputs[0].T
    S = M + 0.01 * np.eye(5)
    np.testing.assert_allclose(S, -S.T, atol=1e-15)
    np.testing.assert_allclose(S, W - W.T, atol=1e-15)
    # W's gradient is G − Gᵀ, G the gradient of the matrix the recurrence applies.
    x, h0 = rng.normal(size=(6, 4, 3)), {"h": rng.normal(size=(4, 5))}
    dout = rng.normal(size=(6, 4, 5))
    ra = anti.forward({"W": W, "V": V}, x, state0=h0)
    rf = free.forward({"A": W - W.T, "V": V}, x, state0=h0)
    np.testing.assert_allclose(ra.outputs, rf.outputs, rtol=1e-12)
    G = free.backward({"A": W - W.T, "V": V}, rf, dout).params["A"]
    dW = anti.backward({"W": W, "V": V}, ra, dout).params["W"]
    np.testing.assert_allclose(dW, G - G.T, rtol=1e-10, atol=1e-12)


def test_w_dot_t_is_w_transposed_and_one_parameter():
    a = loads("cell A {\n input x\n state h : H\n h<t> = tanh(W h + Wᵀ h + V x)\n}\n").cell()
    b = loads("cell A {\n input x\n state h : H\n h<t> = tanh(W h + W.T h + V x)\n}\n").cell()
    assert str(a.graph) == str(b.graph)
    assert set(a.params) == {"W", "V"}
    cell = make(a)
    errors = gradcheck(cell, random_problem(cell, steps=3, batch=2, seed=2))
    assert max(errors.values()) < TOLERANCE


def test_the_transpose_trap_is_closed():
    # Before, `Wᵀ` was a second, independent parameter: now it is W's transpose,
    # and another trailing modifier letter is warned about.
    spec = loads("cell A {\n input x\n state h : H\n h<t> = tanh(W h + Wʳ h + V x)\n}\n")
    assert set(spec.cell().params) == {"W", "Wʳ", "V"}
    assert [w.message for w in spec.warnings] == [
        "`Wʳ` is a parameter of its own, unrelated to `W` (the modifier letter `ʳ` is part "
        "of its name)"]


def test_learned_scalars_broadcast():
    ct = cell_type("FastRNN")
    assert set(ct.scalars) == {"α", "β"}
    cell = make(ct)
    assert cell.param_shapes["α"] == (1,) and cell.param_shapes["β"] == (1,)
    params = cell.init_params(0)
    assert params["α"].tolist() == [-3.0] and params["β"].tolist() == [3.0]
    rng = np.random.default_rng(1)
    x, h0 = rng.normal(size=(1, 2, 3)), rng.normal(size=(2, 4))
    out = cell.forward(params, x, state0={"h": h0}).outputs[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h_tilde = np.tanh(x[0] @ params["W"].T + h0 @ params["U"].T + params["b"])
    np.testing.assert_allclose(out, sig(-3.0) * h_tilde + sig(3.0) * h0, rtol=1e-12)


def test_repeat_equals_the_micro_steps_written_out():
    written = "cell RHN {\n input x\n state s : H\n" + "".join(
        f" h{k} = tanh({'WH x + ' if k == 1 else ''}RH_{k} {prev} + bH_{k})\n"
        f" τ{k} = σ({'WT x + ' if k == 1 else ''}RT_{k} {prev} + bT_{k})\n"
        f" {'s<t>' if k == 3 else f's{k}'} = h{k} * τ{k} + {prev} * (1 - τ{k})\n"
        for k, prev in ((1, "s"), (2, "s1"), (3, "s2"))) + "}\n"
    rep, out = make(cell_type("RHN")), make(loads(written, "rhn.seq").cell())
    assert set(rep.param_shapes) == set(out.param_shapes)
    assert {"RH_1", "RH_2", "RH_3", "WH", "WT"} <= set(rep.param_shapes)
    params = rep.init_params(0)
    assert params["bT_2"].tolist() == [-2.0] * 4  # the declaration applies to each copy
    x = np.random.default_rng(1).normal(size=(5, 2, 3))
    np.testing.assert_array_equal(rep.forward(params, x).outputs, out.forward(params, x).outputs)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_computed_output_is_what_the_cell_returns(backend):
    cell = make(cell_type("RNNLM"), backend)
    assert cell.output == "ŷ" and cell.state_sizes["ŷ"] == 5
    pb = random_problem(cell, steps=4, batch=3, seed=0)
    res = cell.forward(pb.params, pb.x, pb.lengths)
    for b, n in enumerate(pb.lengths):
        np.testing.assert_allclose(res.outputs[:n, b].sum(-1), 1.0, rtol=1e-12)
        assert not res.outputs[n:, b].any()
    a = np.zeros((3, 4))
    for t in range(4):  # the recurrence is the state a alone
        active = pb.lengths > t
        new = np.tanh(a @ pb.params["Waa"].T + pb.x["x"][t] @ pb.params["Wax"].T + pb.params["ba"])
        a = np.where(active[:, None], new, a)
        z = a @ pb.params["Wya"].T + pb.params["by"]
        p = np.exp(z - z.max(-1, keepdims=True))
        want = p / p.sum(-1, keepdims=True)
        np.testing.assert_allclose(res.outputs[t][active], want[active], rtol=1e-12)


def test_a_cell_with_a_computed_output_is_a_network_layer():
    src = PAPERS["RNNLM"] + """
network LM {
    input x : tokens
    h = RNNLM(H=6, Y=5)(x)
    output z<t> = softmax(V h<t> + c)
}
"""
    from seqdsl.tools.netcheck import gradcheck_network, random_network_problem
    net = instantiate(loads(src, "lm.seq").network("LM"), sizes={"X": 5, "Z": 4})
    errors = gradcheck_network(net, random_network_problem(net, steps=3, batch=2, seed=0))
    assert max(errors.values()) < TOLERANCE


def test_check_lists_the_new_forms(tmp_path, run_cli):
    path = tmp_path / "forms.seq"
    path.write_text(PAPERS["mLSTM"] + PAPERS["RNNLM"] + PAPERS["FastRNN"], "utf-8")
    code, out, err = run_cli("check", str(path))
    assert code == 0, err
    assert "  sized       m: M" in out
    assert "  output      ŷ<t>: Y   (computed at every step)" in out
    assert re.search(r"α\s+1\s+scalar\s+= -3", out)
    code, out, err = run_cli("gradcheck", str(path), "--cell", "mLSTM", "--size", "M=2")
    assert code == 0 and "ok: all" in out


def test_matrix_terms_scaled_on_either_side():
    # A factor may follow its term, and a term may be negated: the lowering
    # must pick the number, not the negated weight, as the factor.
    summed = loads("cell A {\n input x\n state h : H\n"
                   " h<t> = ((-W) * 2 - 0.5 * Wᵀ) h + V x\n}\n").cell()
    written = loads("cell A {\n input x\n state h : H\n"
                    " h<t> = -2 * (W h) - 0.5 * (Wᵀ h) + V x\n}\n").cell()
    a, b = make(summed), make(written)
    params = a.init_params(0)
    x = np.random.default_rng(0).normal(size=(3, 2, 3))
    np.testing.assert_allclose(a.forward(params, x).outputs, b.forward(params, x).outputs,
                               rtol=1e-12)
