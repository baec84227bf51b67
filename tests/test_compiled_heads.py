"""Heads and losses on the numba backend run generated, Numba-compiled code
(runtime/numba/emit_rows.py, rows.py): the head graph, the loss graph and the
loss's backward graph each equal the interpreter, and their source takes
every identifier from `Names`, as a cell's does."""
import numpy as np
import pytest

import seqdsl
from seqdsl.ir.graph import BATCH
from seqdsl.runtime.heads import Compiled
from seqdsl.runtime.interp import evaluate
from seqdsl.runtime.numba.emit_rows import generate_rows
from seqdsl.runtime.numba.rows import CompiledRows
from test_generated_names import _assert_only_allocated_names

LIBRARY = "seqdsl/lang/library"
TOL = {np.float64: 1e-12, np.float32: 1e-5}
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
OTHER_HEADS = """
network Heads {
    input x
    h = RNN(H=3)(x)
    output p<t> = sigmoid(Wp h<t> + bp)
    output r = Wr h<T> + br
}
"""
# (head label): how to make its network; the shipped ones are softmax heads,
# per step (Tagger) and at each example's last step (Sentiment).
NETWORKS = {
    "tagger": lambda: seqdsl.load(f"{LIBRARY}/tagger.seq").network("Tagger"),
    "sentiment": lambda: seqdsl.load(f"{LIBRARY}/sentiment.seq").network("Sentiment"),
    "heads": lambda: seqdsl.loads(OTHER_HEADS).network("Heads"),
}
SIZES = {"tagger": {"X": 5, "Y": 4}, "sentiment": {"X": 5, "Y": 3},
         "heads": {"X": 5, "P": 4, "R": 2}}
HEADS = [("tagger", 0), ("sentiment", 0), ("heads", 0), ("heads", 1)]


def head_of(net: str, i: int, dtype):
    nt = NETWORKS[net]()
    return seqdsl.instantiate(nt, sizes=SIZES[net], dtype=dtype).heads[i]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def random_env(graph, rows, dtype, rng, scale=1.0):
    env = {}
    for v in graph.inputs + graph.params:
        shape = ((rows,) if v.kind == BATCH else ()) + tuple(s.value() for s in v.shape)
        env[v.name] = (rng.standard_normal(shape) * (scale if v.kind == BATCH else 1)).astype(dtype)
    return env


def targets(loss, rows, n, rng, dtype):
    if loss == "cross_entropy":
        return np.eye(n, dtype=dtype)[rng.integers(0, n, rows)]
    if loss == "binary_cross_entropy":
        return rng.uniform(size=(rows, n)).astype(dtype)
    return rng.standard_normal((rows, n)).astype(dtype)


def check(graph, env, wanted, dtype, rows):
    """The compiled graph's `wanted` values against the interpreter's."""
    ref = evaluate(graph, env, rows, dtype)
    got = CompiledRows(graph, dtype, wanted)(env)
    for n in wanted:
        assert got[n].dtype == np.dtype(dtype) and got[n].shape == ref[n].shape, n
        assert np.all(np.isfinite(got[n])), n
        assert rel(got[n], ref[n]) <= TOL[dtype], (n, rel(got[n], ref[n]))
    return ref


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("net,i", HEADS)
def test_compiled_head_equals_the_interpreter(net, i, dtype):
    head = head_of(net, i, dtype)
    rng = np.random.default_rng(0)
    for rows in (7, 1):
        check(head.graph, random_env(head.graph, rows, dtype, rng), [head.graph.outputs[0].name],
              dtype, rows)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("net,i", HEADS)
def test_compiled_loss_and_backward_equal_the_interpreter(net, i, loss, dtype):
    head = head_of(net, i, dtype)
    g, bwd = head.graphs(loss)
    rng = np.random.default_rng(1)
    # Logits of ±1e4 for cross-entropy: finite losses and gradients still.
    scales = (1.0, 1e4) if loss == "cross_entropy" else (1.0,)
    for rows, scale in [(6, s) for s in scales] + [(1, 1.0)]:
        env = random_env(head.graph, rows, dtype, rng, scale)
        env[g.inputs[-1].name] = targets(loss, rows, head.size, rng, dtype)
        made = {e.out.name for e in g.eqns}
        fwd = [g.outputs[0].name] + [v.name for v in bwd.inputs if v.name in made]
        env = check(g, env, fwd, dtype, rows)
        env[f"d_{g.outputs[0].name}"] = np.full((rows, head.size), 1.0 / rows, dtype)
        check(bwd, env, [f"d_{n}" for n in head.reads + head.params], dtype, rows)


def test_no_rows_give_empty_values_and_zero_gradients():
    head = head_of("tagger", 0, np.float64)
    g, bwd = head.graphs("cross_entropy")
    env = random_env(bwd, 0, np.float64, np.random.default_rng(2))
    got = CompiledRows(bwd, np.float64, ["d_h", "d_Wy", "d_by"])(env)
    assert got["d_h"].shape == (0, 64) and not got["d_Wy"].any() and not got["d_by"].any()


@pytest.mark.parametrize("net,i", HEADS)
def test_generated_row_source_takes_its_names_from_names(net, i):
    head = head_of(net, i, np.float64)
    for loss in LOSSES:
        g, bwd = head.graphs(loss)
        for graph in (head.graph, g, bwd):
            gen = generate_rows(graph.name, graph, "float64")
            compile(gen.source, "<generated>", "exec")
            _assert_only_allocated_names(gen)


def test_a_numba_network_runs_its_heads_compiled():
    nt = NETWORKS["tagger"]()
    net = seqdsl.instantiate(nt, sizes=SIZES["tagger"], backend="numba")
    assert all(isinstance(h.run, Compiled) for h in net.heads)


def test_tagger_cross_entropy_source_reads_like_the_cells():
    head = head_of("tagger", 0, np.float64)
    g, _ = head.graphs("cross_entropy")
    source = generate_rows(g.name, g, "float64", ["loss", "logp"]).source
    assert "def run(h, target, Wy, by):" in source
    assert "dot_rows(h, Wy.T)" in source and "# logp: B×4 = log_softmax(t2)" in source
    assert source.rstrip().endswith("return (buf_loss, buf_logp, )")
