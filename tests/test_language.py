"""Spellings, names, time rules, parameter inference and warnings."""
import pytest

from seqdsl.errors import SeqError
from seqdsl.spec import loads


def cell(body: str, name="C"):
    spec = loads(f"cell {name} {{\n    input x\n    state h : H\n{body}\n}}\n", "t.seq")
    return spec.cells[name], spec


def step_text(body: str) -> str:
    """The step graph's equations, without the header naming the cell."""
    return "\n".join(str(cell(body)[0].graph).splitlines()[1:])


@pytest.mark.parametrize("a,b", [
    ("h<t> = σ(W x)", "h<t> = sigmoid(W x)"),
    ("h<t> = tanh(W x) ⊙ h", "h<t> = tanh(W x) * h"),
    ("h<t> = tanh(W @ x + U·h)", "h<t> = tanh(W x + U h)"),
    ("h<t> = tanh(W[x] + U[h<t-1>])", "h<t> = tanh(W x<t> + U h)"),
    ("c~ = tanh(W x)\n    h<t> = c~ * h", "c̃ = tanh(W x)\n    h<t> = c̃<t> * h"),
    ("y^ = tanh(W x)\n    h<t> = ŷ", "ŷ = tanh(W x)\n    h<t> = y^"),
])
def test_spellings_mean_the_same(a, b):
    assert step_text(a) == step_text(b)


def test_decomposed_and_composed_marks_are_one_name():
    # ŷ typed as y + U+0302 and as the single character U+0177
    assert step_text("\u0177 = tanh(W x)\n    h<t> = y\u0302") == step_text(
        "ŷ = tanh(W x)\n    h<t> = ŷ")


def test_greek_and_ascii_names_differ():
    ct, _ = cell("Γu = σ(W x)\n    Gu = σ(V x)\n    h<t> = Γu * Gu")
    assert {e.out.name for e in ct.graph.eqns} >= {"Γu", "Gu"}


def test_comments_blank_lines_and_multiline_brackets():
    ct, _ = cell("""
    # a comment line

    h<t> = tanh(W[h,      # the previous state
                  x]      # and the input
                + b)      # trailing comment
""")
    assert [str(s) for s in ct.params["W"].shape] == ["H", "H+X"]


def test_shared_parameter_is_one_parameter():
    ct, _ = cell("h<t> = tanh(W x + W x + b * h + b)")
    assert list(ct.params) == ["W", "b"]


def test_free_names_become_parameters_with_inferred_shapes():
    ct, _ = cell("g = σ(Wg[h, x] + bg)\n    h<t> = g * tanh(U[g * h] + V x + pv * h)")
    shapes = {n: "×".join(s.paren() for s in v.shape) for n, v in ct.params.items()}
    assert shapes == {"Wg": "H×(H+X)", "bg": "H", "U": "H×H", "V": "H×X", "pv": "H"}


def test_state_size_may_be_a_number_or_another_symbol():
    spec = loads("cell C {\n input x\n state h : 5\n h<t> = tanh(W x)\n}\n")
    assert str(spec.cells["C"].params["W"].shape[0]) == "5"
    spec = loads("cell C {\n input x\n state h : K\n h<t> = tanh(W[h, x])\n}\n")
    assert "×".join(s.paren() for s in spec.cells["C"].params["W"].shape) == "K×(K+X)"


def test_intermediates_may_be_written_in_any_order():
    ct, _ = cell("h<t> = tanh(g)\n    g = W[h, x] + b")
    assert [e.out.name for e in ct.graph.eqns][-1] == "h<t>"


def test_new_state_value_used_after_its_equation():
    spec = loads("seqdsl/lang/library/peephole_lstm.seq" and open("seqdsl/lang/library/peephole_lstm.seq").read())
    eqns = [str(e) for e in spec.cells["PeepholeLSTM"].graph.eqns]
    assert any("mul(po, c<t>)" in e for e in eqns)  # Γo reads the new c
    assert any("mul(pu, c<t-1>)" in e for e in eqns)  # Γu reads the old one


def test_the_output_defaults_to_the_first_state():
    spec = loads("cell C {\n input x\n state a, c : H\n a<t> = tanh(W x)\n c<t> = a<t>\n}\n")
    assert spec.cells["C"].output == "a"


def test_param_initialisers():
    ct, _ = cell("param W ~ normal(0.1)\n    param b = -2\n    param U ~ orthogonal\n"
                 "    h<t> = tanh(W x + U h + b)")
    assert ct.inits == {"W": ("normal", 0.1), "b": ("const", -2.0), "U": ("orthogonal",)}


def test_warnings_for_unused_things():
    _, spec = cell("unused = tanh(W x)\n    param q\n    h<t> = tanh(V x)")
    text = [w.render() for w in spec.warnings]
    assert any("`unused` is defined but never used" in t and "t.seq:4:1" in t for t in text)
    assert any("parameter `q` is declared but never used" in t for t in text)
    _, spec = cell("h<t> = tanh(U h)")
    assert any("input `x` is never used" in w.message for w in spec.warnings)


def test_ordinary_parameter_names_are_not_typos():
    # Wc, bc beside c; Wu, bu beside Γu: the course's own naming
    spec = loads(open("seqdsl/lang/library/lstm.seq").read())
    assert spec.warnings == []


@pytest.mark.parametrize("body,bad,hint", [
    ("c_tilde = tanh(W x)\n    h<t> = c_tlde * h", "c_tlde", "did you mean `c_tilde`?"),
    ("Γu = σ(W x)\n    Γo = σ(V x)\n    h<t> = Γu * h + Γf * Γo", "Γf", "did you mean `Γu` or `Γo`?"),
])
def test_misspelt_names_are_caught(body, bad, hint):
    with pytest.raises(SeqError) as e:
        cell(body)
    assert f"`{bad}` is not defined" in e.value.message and hint in e.value.hint
    assert f"param {bad}" in e.value.hint


def test_declared_parameter_is_not_a_typo():
    ct, _ = cell("param c_tlde\n    c_tilde = tanh(W x)\n    h<t> = c_tlde * c_tilde")
    assert "c_tlde" in ct.params


def test_parameter_used_as_matrix_and_vector_is_an_error():
    with pytest.raises(SeqError) as e:
        cell("h<t> = tanh(W x + W * h)")
    assert "used elementwise" in e.value.message and "as a weight" in e.value.message
    assert (e.value.loc.line, e.value.loc.col) == (4, 19)  # the second use


def test_input_size_constraint_is_reported():
    ct, _ = cell("h<t> = tanh(U[h] + tanh(x) + b)")
    assert [str(c) for c in ct.constraints] == ["X = H"]


@pytest.mark.parametrize("body,message", [
    ("h<t> = tanh(W x<t-1>)", "an input is only available at its own step"),
    ("g = tanh(W x)\n    h<t> = g<t-1>", "an intermediate has no value at another step"),
    ("h<t> = tanh(W x + h<t-2>)", "reaches 2 steps back"),
    ("h<t> = tanh(W x + h<T>)", "only meaningful in a network"),
    ("h = tanh(W x)", "state `h` is updated by an equation for `h<t>`"),
    ("x = tanh(W h)\n    h<t> = x", "`x` is an input"),
    ("h<t> = tanh(h<t>)", "used in its own equation"),
    ("h<t> = tanh(W x / h)", "`/` divides by a number only"),
    ("h<t> = tanh(W x)\n    output q", "the output must be a state"),
    ("h<t> = h x", "`h` is a state, not a weight"),
])
def test_cell_errors(body, message):
    with pytest.raises(SeqError) as e:
        cell(body)
    assert message in str(e.value)
