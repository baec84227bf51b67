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
