"""Networks that run: the shipped networks forward and with their losses on
both backends, the combinators' semantics, and gradients against finite
differences."""
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import seqdsl
from cellgen import cells, layer_sizes
from seqdsl.errors import SeqError
from seqdsl.runtime.layers import reverse_each
from seqdsl.tools.gradcheck import TOLERANCE
from seqdsl.tools.netcheck import gradcheck_network, random_network_problem

LIBRARY = "seqdsl/lang/library"
# file: (network, sizes, steps per input)
SHIPPED = {
    "tagger": ("Tagger", {"X": 5, "Y": 4}, {"x": 5}),
    "sentiment": ("Sentiment", {"X": 5, "Y": 3}, {"x": 5}),
    "charlm": ("CharLM", {"X": 7, "Y": 7}, {"x": 5}),
    "translate": ("Translate", {"X": 5, "Y": 6, "Y2": 6}, {"x": 5, "y": 4}),
}


def shipped(file, backend="numpy", dtype=np.float64):
    name, sizes, _ = SHIPPED[file]
    spec = seqdsl.load(f"{LIBRARY}/{file}.seq")
    return seqdsl.instantiate(spec.network(name), sizes=sizes, dtype=dtype, backend=backend)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def problem(net, file, batch, seed, steps=None):
    steps_by_input = {n: steps or t for n, t in SHIPPED[file][2].items()}
    return random_network_problem(net, batch=batch, seed=seed, steps_by_input=steps_by_input)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_numba_network_matches_the_reference(file, dtype, tol):
    """Variable lengths with a length-0 example, then B = 1 and T = 1."""
    ref, fast = shipped(file, "numpy", dtype), shipped(file, "numba", dtype)
    for batch, steps, seed in [(4, None, 0), (1, 1, 1), (3, 2, 2)]:
        pb = problem(ref, file, batch, seed, steps)
        params = ref.init_params(seed)
        a, b = (n.forward(params, pb.inputs, pb.lengths) for n in (ref, fast))
        for h in a.heads:
            assert rel(a.heads[h], b.heads[h]) < tol
        for s in a.sequences:
            assert rel(a.sequences[s], b.sequences[s]) < tol
        for layer, states in a.final.items():
            for n in states:
                assert rel(states[n], b.final[layer][n]) < tol
        la, ga = ref.loss_and_grad(params, pb.inputs, pb.lengths, pb.targets)
        lb, gb = fast.loss_and_grad(params, pb.inputs, pb.lengths, pb.targets)
        assert np.isfinite(la) and abs(la - lb) <= tol * abs(la)
        assert set(ga) == set(params)
        for k in ga:
            assert rel(ga[k], gb[k]) < tol, k


@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_shipped_network_gradcheck(file):
    net = shipped(file)
    pb = problem(net, file, batch=3, seed=3)
    errors = gradcheck_network(net, pb, entries=6)
    assert set(errors) == set(net.param_shapes)
    assert max(errors.values()) < TOLERANCE, errors


NETS = """
network Deep {
    input x
    h = stack(bidirectional(LSTM(H=3)), bidirectional(GRU(H=2)), RNN(H=3))(x)
    output ŷ<t> = softmax(Wy h<t> + by)
}
network ManyToOne {
    input x
    h = stack(GRU(H=3), depth=2)(x)
    output ŷ = softmax(Wy h<T> + by)
}
network EncoderDecoder {
    input x : tokens
    input y : tokens
    e = LSTM(H=3)(x)
    d = LSTM(H=3, init=e<T>)(y)
    output ŷ<t> = softmax(Wy d<t> + by)
}
network Both {
    input x
    h = bidirectional(RNN(H=2))(x)
    output ŷ<t> = σ(Wy h<t> + by)
    output z = Wz h<T>
}
"""
SIZES = {"Deep": {"X": 2, "Y": 3}, "ManyToOne": {"X": 2, "Y": 3},
         "EncoderDecoder": {"X": 4, "Y": 5, "Y2": 5}, "Both": {"X": 2, "Y": 2, "Z": 2}}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_networks_gradcheck_with_their_losses(name):
    """Deep bidirectional with a per-step head, many-to-one, an encoder-decoder
    with token inputs, and a network of two heads (binary cross-entropy and
    squared error), all with variable lengths and a length-0 example."""
    net = seqdsl.instantiate(seqdsl.loads(NETS).network(name), sizes=SIZES[name])
    pb = random_network_problem(net, steps=4, batch=4, seed=5, steps_by_input={"y": 3})
    assert 0 in pb.lengths[next(iter(pb.lengths))]
    errors = gradcheck_network(net, pb, entries=None)
    assert max(errors.values()) < TOLERANCE, errors


def net_of(body, sizes, backend="numpy"):
    spec = seqdsl.loads("network N {\n" + body + "\n}\n")
    return seqdsl.instantiate(spec.network("N"), sizes=sizes, backend=backend)


def test_backward_direction_reads_each_example_in_reverse_and_never_padding():
    net = net_of("    input x\n    h = bidirectional(RNN(H=2))(x)\n    output ŷ<t> = Wy h<t>",
                 {"X": 3, "Y": 1})
    cell = net.layers["h"].bwd.cell
    p = net.init_params(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 3))
    lengths = np.array([5, 2, 0])
    garbage = x.copy()
    garbage[2:, 1] = 1e6
    r = net.forward(p, garbage, lengths)
    assert np.array_equal(r.sequences["h"], net.forward(p, x, lengths).sequences["h"])
    own = {k.split(".")[-1]: v for k, v in p.items() if k.startswith("h.bwd.")}
    for b, n in enumerate(lengths):
        alone = cell.forward(own, x[:n, b:b + 1][::-1].copy()).outputs[::-1, 0]
        assert np.allclose(r.sequences["h"][:n, b, 2:], alone, rtol=1e-14, atol=0)
        assert not r.sequences["h"][n:, b].any()  # zero past the length
    assert np.array_equal(reverse_each(reverse_each(x, lengths), lengths), x)


def test_last_step_head_reads_each_examples_own_last_step():
    net = net_of("    input x\n    h = GRU(H=2)(x)\n    output ŷ = Wy h<T> + by", {"X": 2, "Y": 2})
    p = net.init_params(0)
    p["by"] = np.array([0.5, -0.5])
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    r = net.forward(p, x, [4, 1, 0])
    h = r.sequences["h"]
    assert np.allclose(r.heads["ŷ"][0], p["Wy"] @ h[3, 0] + p["by"])
    assert np.allclose(r.heads["ŷ"][1], p["Wy"] @ h[0, 1] + p["by"])
    assert not r.heads["ŷ"][2].any()  # no step: no output, and no loss
    loss, g = net.loss_and_grad(p, x, [4, 1, 0], np.ones((3, 2)), reduction="sum")
    full = ((r.heads["ŷ"][:2] - 1) ** 2).sum()
    assert loss == pytest.approx(full, rel=1e-14)


def test_decoder_starts_from_the_encoders_final_state():
    spec = seqdsl.loads(NETS)
    net = seqdsl.instantiate(spec.network("EncoderDecoder"), sizes=SIZES["EncoderDecoder"])
    p = net.init_params(2)
    x, y = np.array([[1, 2], [3, 0], [0, 0]]), np.array([[4, 1], [2, 2]])
    r = net.forward(p, {"x": x, "y": y}, {"x": [3, 1], "y": [2, 2]})
    d_cell = net.layers["d"].cell
    own = {k[2:]: v for k, v in p.items() if k.startswith("d.")}
    one_hot = np.eye(5)[y]
    alone = d_cell.forward(own, one_hot, [2, 2], r.final["e"])
    assert np.allclose(alone.outputs, r.sequences["d"], rtol=1e-14, atol=0)


def test_cross_entropy_is_stable_for_huge_logits():
    net = net_of("    input x\n    h = RNN(H=2)(x)\n    output ŷ<t> = softmax(Wy h<t> + by)",
                 {"X": 2, "Y": 3})
    p = net.init_params(0)
    p["by"] = np.array([1e4, -1e4, 0.0])
    x = np.zeros((2, 2, 2))
    loss, g = net.loss_and_grad(p, x, None, np.array([[1, 0], [2, -1]]))
    assert np.isfinite(loss) and loss == pytest.approx((2e4 + 0 + 1e4) / 3, rel=1e-12)
    assert all(np.isfinite(v).all() for v in g.values())


def test_masks_labels_and_reductions():
    net = net_of("    input x\n    h = RNN(H=2)(x)\n    output ŷ<t> = softmax(Wy h<t> + by)",
                 {"X": 2, "Y": 3})
    p = net.init_params(0)
    x = np.random.default_rng(0).normal(size=(3, 2, 2))
    ids = np.array([[0, 1], [2, -1], [1, 1]])
    mask = np.array([[1, 1], [1, 1], [0, 1]], bool)
    total, g_sum = net.loss_and_grad(p, x, [3, 2], ids, mask=mask, reduction="sum")
    mean, g_mean = net.loss_and_grad(p, x, [3, 2], ids, mask=mask)
    labelled = 3  # (0,0), (0,1), (1,0): (1,1) unlabelled, (2,0) masked, (2,1) padding
    assert mean == pytest.approx(total / labelled, rel=1e-14)
    assert np.allclose(g_mean["Wy"] * labelled, g_sum["Wy"], rtol=1e-13)
    y = net.forward(p, x, [3, 2]).heads["ŷ"]
    expect = -np.log(y[0, 0, 0]) - np.log(y[0, 1, 1]) - np.log(y[1, 0, 2])
    assert total == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_the_loss_of_a_forward_result_is_loss_and_grads(file, backend):
    """`net.loss(net.forward(...), targets)` gives `loss_and_grad`'s value
    (one forward run for outputs and loss), for every reduction and a mask."""
    net = shipped(file, backend)
    pb = problem(net, file, 4, 3)
    p = net.init_params(3)
    out = net.forward(p, pb.inputs, pb.lengths)
    mask = np.random.default_rng(4).random(next(iter(out.heads.values())).shape[:-1]) < 0.7
    for kwargs in ({}, {"reduction": "sum"}, {"mask": mask}):
        want = net.loss_and_grad(p, pb.inputs, pb.lengths, pb.targets, **kwargs)[0]
        assert net.loss(out, pb.targets, **kwargs) == want


def test_the_loss_takes_only_its_own_networks_unchanged_results():
    a, b = shipped("tagger"), shipped("tagger")
    pb = problem(a, "tagger", 3, 0)
    out = a.forward(a.init_params(0), pb.inputs, pb.lengths)
    with pytest.raises(SeqError, match="the result of this network's forward"):
        b.loss(out, pb.targets)  # another network's result
    with pytest.raises(SeqError, match="the result of this network's forward"):
        a.loss({}, pb.targets)
    with pytest.raises(SeqError, match="reduction"):
        a.loss(out, pb.targets, reduction="max")
    good = out.lengths["h"]
    out.lengths["h"] = good + 100  # lengths past the steps: refused, never read
    with pytest.raises(SeqError, match="lengths"):
        a.loss(out, pb.targets)
    out.lengths["h"] = good
    out.run.sequences["h"] = out.run.sequences["h"][:, :, :3]  # a shape the head cannot read
    with pytest.raises(SeqError, match="result: sequence 'h'"):
        a.loss(out, pb.targets)


@pytest.mark.parametrize("call,message", [
    (lambda s: seqdsl.instantiate(s.network("Deep"), sizes={"X": 2}),
     "network Deep: no size given for Y"),
    (lambda s: seqdsl.instantiate(s.network("Deep"), hidden=3, sizes={"X": 2, "Y": 2}),
     "has its hidden sizes in its spec"),
    (lambda s: s.network("Nope"), "has no network `Nope`"),
    (lambda s: s.cell("Deep"), "`Deep` in <string> is a network, not a cell"),
])
def test_instantiating_networks_says_what_is_wrong(call, message):
    with pytest.raises(SeqError, match=message):
        call(seqdsl.loads(NETS))


@pytest.mark.parametrize("args,message", [
    (dict(inputs=np.zeros((2, 1, 3))), r"inputs\[.x.\]: expected shape \(2, 1, 2\) \(T, B, size\)"),
    (dict(inputs={"q": np.zeros((2, 1, 2))}), "missing x"),
    (dict(targets=np.array([[7]])), "class id 7 is out of range for output `ŷ`, which has 3"),
    (dict(targets=np.zeros((2, 1))), r"targets\[.ŷ.\]: expected shape \(1, 1, 3\)"),
    (dict(loss="hinge"), "unknown loss 'hinge'"),
    (dict(reduction="max"), "reduction: expected one of mean, sum"),
])
def test_bad_arguments_to_a_network_are_named(args, message):
    net = seqdsl.instantiate(seqdsl.loads(NETS).network("Deep"), sizes={"X": 2, "Y": 3})
    call = dict(params=net.init_params(), inputs=np.zeros((1, 1, 2)), targets=np.array([[0]]))
    call.update(args)
    with pytest.raises(SeqError, match=message):
        net.loss_and_grad(**call)


@st.composite
def networks(draw):
    """Source of a random network: one or two generated cells, stacked one
    to three deep, each layer one-way or bidirectional, with a per-step or a
    last-step head that is a softmax, a sigmoid or linear."""
    n_cells = draw(st.integers(1, 2))
    defs = [draw(cells(max_depth=2)).replace("cell Gen", f"cell Gen{i}") for i in range(n_cells)]
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, n_cells - 1))
        layer = f"Gen{i}(H={draw(st.integers(2, 3))}{layer_sizes(defs[i])})"
        layers.append(f"bidirectional({layer})" if draw(st.booleans()) else layer)
    stacked = layers[0] if len(layers) == 1 else f"stack({', '.join(layers)})"
    fn = draw(st.sampled_from(["softmax", "σ", ""]))
    when = draw(st.sampled_from(["<t>", "<T>"]))
    head = f"ŷ{'<t>' if when == '<t>' else ''} = {fn}(Wy h{when} + by)"
    return "\n".join(defs) + f"network N {{\n    input x\n    h = {stacked}(x)\n" \
        f"    output {head}\n}}\n"


@settings(max_examples=25, deadline=None)
@given(src=networks(), seed=st.integers(0, 2**16))
# A computed output whose size is tied to H: the layer takes no `Y=`.
@example(src="cell Gen0 {\n    input x\n    state h, c : H\n    h<t> = h\n"
             "    c<t> = σ(W0[x] + b0) * h\n    output y<t> = softmax(W1 h<t> + b0)\n}\n"
             "network N {\n    input x\n    h = Gen0(H=2)(x)\n"
             "    output ŷ<t> = softmax(Wy h<t> + by)\n}\n", seed=0)
def test_generated_networks_gradcheck(src, seed):
    try:
        spec = seqdsl.loads(src, "generated.seq")
    except SeqError as e:  # a generated cell may tie its input size to H
        assume("input size" not in str(e))
        raise
    net = seqdsl.instantiate(spec.network("N"), sizes={"X": 2, "Y": 3})
    pb = random_network_problem(net, steps=3, batch=3, seed=seed)
    errors = gradcheck_network(net, pb, entries=4, seed=seed)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]:.2e}\n{src}"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_token_ids_give_what_one_hot_vectors_give(backend):
    """Ids are looked up as weight columns (never a one-hot product); the
    outputs and every gradient equal those of the same network reading the
    one-hot vectors, and padding may hold any id."""
    body = "    h = stack(bidirectional(GRU(H=3)), LSTM(H=2))(x)\n    output ŷ<t> = softmax(Wy h<t>)"
    ids_net = net_of("    input x : tokens\n" + body, {"X": 6, "Y": 3}, backend)
    dense_net = net_of("    input x\n" + body, {"X": 6, "Y": 3}, backend)
    assert ids_net.layers["h"].children[0].fwd.tokens is not None
    p = ids_net.init_params(4)
    ids = np.array([[1, 5, 0], [2, 2, -7], [0, 4, 99]])
    lengths = [3, 3, 1]
    one_hot = np.eye(6)[np.where(ids >= 0, ids % 6, 0)]
    targets = np.array([[0, 1, 2], [1, -1, 0], [2, 2, 1]])
    a = ids_net.loss_and_grad(p, ids, lengths, targets)
    b = dense_net.loss_and_grad(p, one_hot, lengths, targets)
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    for k in p:
        assert rel(a[1][k], b[1][k]) < 1e-12, k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_lookups_equal_numpys(dtype):
    """Columns gathered per step (zero past each length), and gradients
    summed back per id, repeated ids included; padding may hold any id."""
    from seqdsl.runtime.lookup import lookups
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((4, 12)).astype(dtype)
    ids = rng.integers(0, 7, (5, 6))
    ids[4, 1], ids[3, 2] = 99, -3
    lengths = np.array([5, 4, 3, 0, 5, 1])
    values = rng.standard_normal((5, 6, 4)).astype(dtype)
    ref, compiled = lookups("numpy"), lookups("numba")
    cols = weight[:, 2:9]  # a strided block of columns, as the layers pass them
    np.testing.assert_array_equal(compiled.gather(cols, ids, lengths),
                                  ref.gather(cols, ids, lengths))
    assert not ref.gather(cols, ids, lengths)[4, 1].any()
    a, b = weight.copy(), weight.copy()
    ref.add(a[:, 2:9], ids, lengths, values)
    compiled.add(b[:, 2:9], ids, lengths, values)
    np.testing.assert_allclose(b, a, rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_array_equal(b[:, :2], weight[:, :2])  # other columns untouched
    valid = np.arange(5)[:, None] < lengths[None, :]
    np.testing.assert_allclose(a[:, 2] - weight[:, 2], values[valid & (ids == 0)].sum(0),
                               rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_a_cell_that_never_reads_its_tokens_still_runs():
    """Nothing to look up: the cell runs on the one-hot vectors it ignores
    (they carry the run's steps and batch), and its outputs are those of
    the same network reading dense input."""
    cell = "cell Idle {\n input x\n state c : H\n c<t> = tanh(Wc c + b)\n output c\n}\n"
    nets = [seqdsl.instantiate(seqdsl.loads(cell + "network N {\n" + decl + "    h = Idle(H=3)(x)\n"
                                            "    output ŷ<t> = softmax(Wy h<t>)\n}\n"
                                            ).network("N"), sizes={"X": 4, "Y": 2})
            for decl in ("    input x : tokens\n", "    input x\n")]
    assert nets[0].layers["h"].tokens is None
    p = nets[0].init_params(1)
    ids = np.array([[1, 3], [0, 2]])
    a = nets[0].loss_and_grad(p, ids, [2, 1], np.array([[0, 1], [1, -1]]))
    b = nets[1].loss_and_grad(p, np.eye(4)[ids], [2, 1], np.array([[0, 1], [1, -1]]))
    assert a[0] == pytest.approx(b[0], rel=1e-13)


def test_token_ids_out_of_the_vocabulary_are_refused():
    net = net_of("    input x : tokens\n    h = RNN(H=2)(x)\n    output ŷ<t> = Wy h<t>",
                 {"X": 4, "Y": 1})
    with pytest.raises(SeqError, match=r"inputs\['x'\]: token id 4 is outside the vocabulary 0..3"):
        net.forward(net.init_params(), np.array([[1], [4]]), [2])
    net.forward(net.init_params(), np.array([[1], [4]]), [1])  # padding may hold anything


def test_numpy_blas_runs_one_thread_while_a_compiled_network_runs():
    """NumPy's BLAS threads and the kernels' (SciPy's) spin against each
    other; a compiled network keeps NumPy's to one thread while it runs."""
    from seqdsl.runtime.numba.blas import numpy_blas, numpy_blas_single_threaded
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" not in blas:
        pytest.skip(f"NumPy's BLAS is {blas}, not OpenBLAS")
    (lib,) = numpy_blas()
    before = lib.get_num_threads()
    lib.set_num_threads(2)  # so that one thread is a change
    try:
        with numpy_blas_single_threaded():
            assert lib.get_num_threads() == 1
        assert lib.get_num_threads() == 2
    finally:
        lib.set_num_threads(before)
