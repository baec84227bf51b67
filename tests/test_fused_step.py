"""The numba backend's compiled training step (runtime/numba/step.py): a
network's `loss_and_grad` as one generated function that calls the cells'
and heads' generated kernels by address. It gives exactly what the layer by
layer path gives, to the bit, for every network it covers (in shards of a
batch's rows, to rounding); the networks and batches it does not cover run
layer by layer."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import seqdsl
from seqdsl.runtime.network import Network
from seqdsl.runtime.numba.shards import RunPlan
from seqdsl.tools.netcheck import random_network_problem

from test_run_networks import NETS as RUN_NETS
from test_run_networks import SIZES as RUN_SIZES

# The networks test_run_networks checks by gradients (Deep: a bidirectional
# stack; ManyToOne; EncoderDecoder: a decoder starting from its encoder's
# states; Both: two heads on a bidirectional layer), and these.
NETS = RUN_NETS + """
network Chain {
    input x
    h = stack(GRU(H=3), LSTM(H=2), RNN(H=3))(x)
    output ŷ<t> = softmax(Wy h<t> + by)
}
network TwoHeads {
    input x
    h = RNN(H=2)(x)
    g = LSTM(H=3)(h)
    output ŷ<t> = σ(Wy g<t> + by)
    output z = Wz h<T>
    output v<t> = Wv x<t>
}
network Tokens {
    input x : tokens
    λ = LSTM(H=3)(x)
    class = GRU(H=2)(λ)
    output ŷ<t> = softmax(Wy class<t> + by)
}
network TaggedTokens {
    input x : tokens
    h = bidirectional(GRU(H=2))(x)
    g = RNN(H=2)(h)
    output ŷ<t> = σ(Wy h<t> + Wg g<t> + by)
}
"""
SIZES = {**RUN_SIZES, "Chain": {"X": 2, "Y": 3}, "TwoHeads": {"X": 2, "Y": 2, "Z": 2, "V": 3},
         "Tokens": {"X": 5, "Y": 4}, "TaggedTokens": {"X": 5, "Y": 3}}
FUSED = sorted(SIZES)


def network(name, dtype=np.float64) -> Network:
    return seqdsl.instantiate(seqdsl.loads(NETS, "nets.seq").network(name), sizes=SIZES[name],
                              dtype=dtype, backend="numba")


def layer_by_layer(net, *args, **kwargs):
    net.fused = False
    try:
        return net.loss_and_grad(*args, **kwargs)
    finally:
        net.fused = True


def fused_only(net, monkeypatch, *args, **kwargs):
    """`loss_and_grad` that fails if it runs layer by layer."""
    def refuse(*a, **k):
        raise AssertionError("ran layer by layer")
    with monkeypatch.context() as m:
        m.setattr(Network, "_forward", refuse)
        return net.loss_and_grad(*args, **kwargs)


def assert_same(got, want):
    assert got[0] == want[0]
    assert list(got[1]) == list(want[1])
    for k in want[1]:
        assert got[1][k].dtype == want[1][k].dtype and got[1][k].shape == want[1][k].shape
        assert np.array_equal(got[1][k], want[1][k]), k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", FUSED)
def test_the_compiled_step_gives_what_the_layers_give(name, dtype, monkeypatch):
    """Variable lengths with a length-0 example, unlabelled steps, B = 1 and
    T = 1, a mask and the sum; per-step and last-step heads, class ids and
    dense targets, stacked and bidirectional layers (on vectors and token
    ids), a layer reading a layer, token lookups, a decoder starting from an
    encoder's final states (two inputs of their own lengths)."""
    net = network(name, dtype)
    for steps, batch, seed in [(5, 4, 0), (1, 1, 1), (3, 3, 2)]:
        pb = random_network_problem(net, steps=steps, batch=batch, seed=seed,
                                    steps_by_input={"y": max(steps - 1, 1)})
        args = (pb.params, pb.inputs, pb.lengths, pb.targets)
        assert_same(fused_only(net, monkeypatch, *args), layer_by_layer(net, *args))
        masks = {h.name: np.random.default_rng(seed).random(
                     np.shape(pb.targets[h.name])[:2 if h.per_step else 1]) < 0.6
                 for h in net.heads}
        for kwargs in ({"reduction": "sum"}, {"mask": masks}):
            assert_same(fused_only(net, monkeypatch, *args, **kwargs),
                        layer_by_layer(net, *args, **kwargs))


def test_arrays_of_any_layout_are_taken(monkeypatch):
    """Token ids in Fortran order, strided vectors and parameters, lengths
    as a list: the step gets them C-contiguous, as its signature says."""
    for name in ("Tokens", "Chain"):
        net = network(name)
        pb = random_network_problem(net, steps=4, batch=3, seed=2)
        (x,) = pb.inputs.values()
        x = np.asfortranarray(x) if x.ndim == 2 else np.repeat(x, 2, axis=1)[:, ::2]
        assert not x.flags.c_contiguous
        params = {k: np.asfortranarray(v) for k, v in pb.params.items()}
        args = (params, x, list(next(iter(pb.lengths.values()))), pb.targets)
        assert_same(fused_only(net, monkeypatch, *args), layer_by_layer(net, *args))


def test_a_head_with_no_labelled_row_adds_nothing(monkeypatch):
    net = network("Chain")
    pb = random_network_problem(net, steps=3, batch=2, seed=4)
    args = (pb.params, pb.inputs, pb.lengths, {"ŷ": np.full((3, 2), -1)})
    got = fused_only(net, monkeypatch, *args)
    assert_same(got, layer_by_layer(net, *args))
    assert got[0] == 0.0 and not got[1]["Wy"].any()


@pytest.mark.parametrize("body", [
    # a head reading token ids (as one-hot rows)
    "input x : tokens\n h = RNN(H=2)(x)\n output ŷ<t> = softmax(Wy h<t> + Wx x<t> + by)",
    # two decoders starting from one encoder's states
    "input x\n e = RNN(H=2)(x)\n d = RNN(H=2, init=e<T>)(x)\n f = RNN(H=2, init=e<T>)(d)\n"
    " output ŷ<t> = softmax(Wy f<t> + by)",
])
def test_networks_it_does_not_cover_run_layer_by_layer(body):
    """The answer is the layers' own."""
    spec = seqdsl.loads("network N {\n" + body + "\n}\n")
    net = seqdsl.instantiate(spec.network("N"), sizes={"X": 3, "Y": 3}, backend="numba")
    pb = random_network_problem(net, steps=4, batch=3, seed=0)
    args = (pb.params, pb.inputs, pb.lengths, pb.targets)
    got = net.loss_and_grad(*args)
    assert list(net._steps.values()) == [None]
    assert_same(got, layer_by_layer(net, *args))


def assert_close(got, want):
    """The same loss and gradients to the rounding of sums made in another
    order (float64)."""
    assert abs(got[0] - want[0]) <= 1e-12 * abs(want[0])
    assert list(got[1]) == list(want[1])
    for k, w in want[1].items():
        assert got[1][k].dtype == w.dtype and got[1][k].shape == w.shape
        np.testing.assert_allclose(got[1][k], w, rtol=1e-10, atol=1e-12 * np.abs(w).max(),
                                   err_msg=k)


def share(net, parallel):
    for layer in net.layers.values():
        for _, cell in layer.cells():
            cell.runner.parallel = parallel


@pytest.mark.parametrize("in_one_loop", [True, False], ids=["in one loop", "on Python's threads"])
@pytest.mark.parametrize("name", FUSED)
def test_a_batch_the_cells_shard_runs_as_shards_of_the_step(name, in_one_loop, monkeypatch):
    """Where the cells' plan splits a batch's rows over threads, the step
    runs in shards too, each the whole step, never layer by layer: in one
    parallel loop (emit_shards.py) where Numba's threads hand off fast, else
    each on a Python thread. Either way the shards' summed terms and
    gradients are what the layers give, to rounding: shards of 1 and 2 rows,
    a length-0 example, unlabelled steps, a mask and the sum."""
    from seqdsl.runtime.numba import step as step_module
    from seqdsl.runtime.numba.shards import Parallelism
    net = network(name)
    share(net, Parallelism(3, min_rows=1, min_flops=0, min_loop_flops=0, min_shards=2))
    pb = random_network_problem(net, steps=4, batch=5, seed=3, steps_by_input={"y": 3})
    args = (pb.params, pb.inputs, pb.lengths, pb.targets)
    masks = {h.name: np.random.default_rng(3).random(
                 np.shape(pb.targets[h.name])[:2 if h.per_step else 1]) < 0.6
             for h in net.heads}
    monkeypatch.setattr(step_module, "parallel_loops_hand_off_fast", lambda: in_one_loop)
    shards = []
    real_each, real_loop = step_module.run_each, step_module.FusedStep._run_in_shards
    monkeypatch.setattr(step_module, "run_each",
                        lambda job, items: shards.append(len(items)) or real_each(job, items))
    monkeypatch.setattr(step_module.FusedStep, "_run_in_shards",
                        lambda self, B, n, *rest: shards.append(n) or real_loop(self, B, n, *rest))
    for kwargs in ({}, {"reduction": "sum"}, {"mask": masks}):
        share(net, Parallelism(3, min_rows=1, min_flops=0, min_loop_flops=0, min_shards=2))
        want = layer_by_layer(net, *args, **kwargs)  # the cells' own shards
        assert_close(fused_only(net, monkeypatch, *args, **kwargs), want)
    assert shards == [3, 3, 3]


def test_a_sharded_step_keeps_the_networks_unsharded_runs_on_one_blas_thread(monkeypatch):
    """After its first sharded batch, a batch too small to shard (and every
    other run of the network's cells) keeps to one BLAS thread: OpenBLAS's
    threads spin after a call on several, on the cores the shards need."""
    from seqdsl.runtime.numba import step as step_module
    from seqdsl.runtime.numba.shards import Parallelism
    net = network("Chain")
    share(net, Parallelism(2, min_rows=2, min_flops=0, min_loop_flops=0, small_step_flops=0))
    threads = []
    real = step_module.blas_threads
    monkeypatch.setattr(step_module, "blas_threads", lambda n: threads.append(n) or real(n))
    small = random_network_problem(net, steps=3, batch=3, seed=1)
    big = random_network_problem(net, steps=3, batch=4, seed=1)
    for pb in (small, big, small):
        net.loss_and_grad(pb.params, pb.inputs, pb.lengths, pb.targets)
    assert threads == [2, 1, 1]
    cells = [cell.runner for layer in net.layers.values() for _, cell in layer.cells()]
    assert {r._plan(3, 3) for r in cells} == {RunPlan(1, 1)}


def test_cells_whose_plans_differ_run_layer_by_layer(monkeypatch):
    from seqdsl.runtime.numba.shards import Parallelism
    net = network("Chain")
    share(net, Parallelism(3, min_rows=1, min_flops=0, min_shards=2))
    next(iter(net.layers.values())).children[0].runner.parallel = Parallelism(1)
    pb = random_network_problem(net, steps=3, batch=4, seed=1)
    args = (pb.params, pb.inputs, pb.lengths, pb.targets)
    want = layer_by_layer(net, *args)
    calls, real = [], Network._forward
    monkeypatch.setattr(Network, "_forward",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    got = net.loss_and_grad(*args)
    assert calls and list(net._steps.values()) != [None]
    assert_same(got, want)


def test_bad_arguments_say_the_same_either_way():
    net = network("Tokens")
    pb = random_network_problem(net, steps=3, batch=2, seed=0)
    bad = [(pb.params, {"x": pb.inputs["x"] + 10}, pb.lengths, pb.targets),
           (pb.params, pb.inputs, pb.lengths, {"ŷ": np.full((3, 2), 9)}),
           ({**pb.params, "Wy": pb.params["Wy"].T}, pb.inputs, pb.lengths, pb.targets)]
    for args in bad:
        messages = []
        for fused in (True, False):
            net.fused = fused
            with pytest.raises(seqdsl.SeqError) as e:
                net.loss_and_grad(*args)
            messages.append(str(e.value))
        assert messages[0] == messages[1]


def test_the_step_is_generated_from_names_it_never_writes_as_code():
    """Layer and output names (`λ`, `class`, `ŷ`) reach the source only as
    identifiers from one `Names` (`seq_lamda`, `seq_class`) and in comments."""
    net = network("Tokens")
    pb = random_network_problem(net, steps=3, batch=2, seed=0)
    net.loss_and_grad(pb.params, pb.inputs, pb.lengths, pb.targets)
    (step,) = net._steps.values()
    src = step.source
    compile(src, "step.py", "exec")
    assert "def loss_and_grad(" in src and "seq_class" in src and "seq_lamda" in src
    assert "y_hat" in src and "ŷ" not in src.replace("# output ŷ", "")


def test_a_second_process_loads_the_step_from_the_cache(tmp_path):
    """The step is cached like the kernels: a new process compiles nothing
    (no address is written into the cached machine code, so it runs there)."""
    script = textwrap.dedent(f"""
        import numpy as np, seqdsl
        from seqdsl.tools.netcheck import random_network_problem
        net = seqdsl.instantiate(seqdsl.loads({NETS!r}).network("Tokens"),
                                 sizes={SIZES["Tokens"]!r}, backend="numba")
        pb = random_network_problem(net, steps=3, batch=2, seed=0)
        loss, _ = net.loss_and_grad(pb.params, pb.inputs, pb.lengths, pb.targets)
        (step,) = net._steps.values()
        print(step.loaded.cache_hit, repr(loss))
    """)
    env = {"SEQDSL_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**__import__("os").environ, **env}, timeout=600)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    (hit1, loss1), (hit2, loss2) = (r.stdout.split() for r in runs)
    assert (hit1, hit2) == ("False", "True") and loss1 == loss2
