"""Checking networks: layers, combinators, heads and their errors."""
import pytest

from seqdsl.errors import SeqError
from seqdsl.spec import loads

TWO = "cell Two {\n input x, z\n state h : H\n h<t> = tanh(W x + V z)\n}\n"


def net(body: str, prefix: str = ""):
    return loads(prefix + "network N {\n    input x\n" + body + "\n}\n", "n.seq")


def test_stack_depth_gives_separate_parameters():
    nt = net("    h = stack(RNN(H=8), depth=3)(x)\n    output ŷ<t> = softmax(Wy h<t> + by)").networks["N"]
    assert [n for n in nt.params if n.endswith(".Waa")] == ["h.0.Waa", "h.1.Waa", "h.2.Waa"]
    assert "×".join(map(str, nt.params["h.1.Wax"])) == "8×8"


def test_outputs_may_share_a_parameter_and_mixed_kinds_are_named():
    nt = net("    h = GRU(H=4)(x)\n    output ŷ<t> = softmax(Wy h<t> + by)\n"
             "    output z = softmax(Wy h<T> + bz)").networks["N"]
    assert "×".join(map(str, nt.params["Wy"])) == "Y×4" and list(map(str, nt.params["bz"])) == ["Y"]
    assert nt.kind == "many-to-many and many-to-one"


def test_head_class_count_gets_a_symbol_no_input_has():
    """`input y` has size Y, so `ŷ`'s number of classes is Y2, not Y: the
    two sizes are independent."""
    spec = loads("network N {\n    input x\n    input y : tokens\n    e = LSTM(H=8)(x)\n"
                 "    d = LSTM(H=8, init=e<T>)(y)\n    output ŷ<t> = softmax(Wy d<t> + by)\n}\n")
    nt = spec.networks["N"]
    assert [str(s) for _, _, s in nt.inputs] == ["X", "Y"]
    assert "×".join(map(str, nt.params["Wy"])) == "Y2×8" and str(nt.heads[0].size) == "Y2"


def test_two_heads_from_one_letter_get_separate_class_counts():
    nt = net("    h = GRU(H=4)(x)\n    output ŷ<t> = softmax(Wy h<t>)\n"
             "    output y_last = softmax(Vy h<T>)").networks["N"]
    assert [str(h.size) for h in nt.heads] == ["Y", "Y2"]
    assert "×".join(map(str, nt.params["Vy"])) == "Y2×4"


def test_unused_sequence_warning_points_at_it():
    spec = net("    h = GRU(H=4)(x)\n    g = GRU(H=4)(x)\n    output ŷ<t> = softmax(Wy h<t>)")
    [w] = spec.warnings
    assert w.render() == "n.seq:4:5: warning: sequence `g` is computed but never used"


@pytest.mark.parametrize("body,prefix,message", [
    ("    h = Two(H=8)(x)\n    output y<t> = W h<t>", TWO, "Two has 2 inputs; a layer reads one"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t> = h<t> / h<t>", "", "`/` divides by a number only"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t> = softmax(Wy h<t> + hb)", "", "`hb` is not defined"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t> = tanh[h<t>]", "", "`tanh` is a function"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t> = W h<t>\n    output ŷ<t> = V h<t>", "",
     "a second output `ŷ`"),
    ("    h = GRU(H=4)(x)\n    output h<t> = W h<t>", "", "has the name of a sequence"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t> = W h<T>", "", "output `ŷ<t>` reads `h<t>`"),
    ("    h = GRU(K=4)(x)\n    output ŷ<t> = W h<t>", "", "`GRU` takes no argument `K`"),
    ("    h = GRU(H=4)(q)\n    output ŷ<t> = W h<t>", "", "unknown sequence `q`"),
    ("    h = GRU(H=0)(x)\n    output ŷ<t> = W h<t>", "", "takes a positive whole number"),
    ("    h = stack(GRU(H=4), GRU(H=4), depth=2)(x)\n    output ŷ<t> = W h<t>", "",
     "`depth=` repeats a single layer"),
    ("    e = GRU(H=4)(x)\n    d = LSTM(H=4, init=e<T>)(x)\n    output ŷ<t> = W d<t>", "",
     "does not fit the states of LSTM"),
    ("    h = GRU(H=4)(x)", "", "has no output"),
    ("    h = GRU(H=4)(x)\n    output ŷ<t-1> = W h<t>", "",
     "output `ŷ<t-1>`: an output is `ŷ<t>` (every step) or `ŷ` (each example's last step)"),
    ("    h = GRU(H=4)(x)\n    output ŷ<T> = W h<T>", "", "an output is `ŷ<t>` (every step)"),
])
def test_network_errors(body, prefix, message):
    with pytest.raises(SeqError) as e:
        net(body, prefix)
    assert message in str(e.value)
    assert e.value.loc is not None and e.value.loc.file == "n.seq"


@pytest.mark.parametrize("body,message", [
    ("h<t> = tanh[W x]", "`tanh` is a function"),
    ("h<t> = sigmoid x", "`sigmoid` is a function"),
    ("h<t> = tanh(W x) + relu", "`relu` is a function"),
    ("param W ~ normal(-1)\n h<t> = tanh(W x)", "takes a positive scale"),
])
def test_function_names_and_bad_initialisers_in_cells(body, message):
    with pytest.raises(SeqError, match=message):
        loads(f"cell C {{\n input x\n state h : H\n {body}\n}}\n")


def test_division_by_a_constant_expression():
    spec = loads("cell C {\n input x\n state h : H\n h<t> = tanh(W x) / (2 * 3)\n}\n")
    assert "div(t2, 6)" in str(spec.cells["C"].graph)
