"""A compiled cell's batch split into shards run on threads: when it is
split, that a sharded run gives what the unsharded run gives (test_jit.py
compares both with the reference for every cell it runs), how its trace is
checked, and the thread count's sources."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from seqdsl import SeqError, instantiate
from seqdsl.runtime.numba import blas, shards
from seqdsl.runtime.numba.shards import Parallelism, RunPlan, Shard, shard_rows, thread_count
from seqdsl.spec import library_cells, loads

FORCED = Parallelism(4, min_rows=1, min_flops=0, min_shards=2)
LSTM_FLOPS = 2.0 * 4 * 256 * 512  # per row and step at (X, H) = (256, 256)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    os.environ["SEQDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


def test_a_batch_is_sharded_only_when_every_thread_gets_enough_rows():
    on16, on2 = Parallelism(16), Parallelism(2)
    assert on16.plan(100, 256, LSTM_FLOPS) == RunPlan(16, 1)
    # 32 rows cannot give 16 threads 16 rows each: the products use BLAS's threads
    assert on16.plan(100, 32, LSTM_FLOPS) == RunPlan(1, 16)
    assert on2.plan(100, 32, LSTM_FLOPS) == RunPlan(2, 1)
    assert Parallelism(1).plan(100, 256, LSTM_FLOPS) == RunPlan(1, 1)
    # too little work a shard: one thread, and small products on one BLAS thread
    assert on2.plan(2, 32, 1000.0) == RunPlan(1, 1)
    assert on16.plan(100, 1, 2.0 * 4 * 64 * 96) == RunPlan(1, 1)
    assert on16.plan(100, 1, 2.0 * 4 * 1024 * 2048) == RunPlan(1, 16)


def test_shards_in_one_parallel_loop_need_rows_enough_and_no_least_work():
    """A network step's shards, handed to threads in microseconds, pay from
    16 rows each however short the step (CharLM, H = 128: T = 1 too)."""
    on2, charlm = Parallelism(2), 2.0 * 4 * 128 * 128
    assert on2.plan(1, 32, charlm) == RunPlan(1, 2)
    assert on2.plan(1, 32, charlm, in_one_loop=True) == RunPlan(2, 1)
    assert on2.plan(8, 31, charlm, in_one_loop=True) == RunPlan(1, 2)
    at_1024 = 4 * 1024 * 2048 * 4
    assert on2.plan(100, 32, 2.0 * 4 * 1024 * 2048, at_1024, in_one_loop=True) == RunPlan(1, 2)


def test_a_cell_whose_weights_outgrow_the_caches_is_not_sharded():
    on2 = Parallelism(2)
    at_512, at_1024 = 4 * 512 * 1024 * 4, 4 * 1024 * 2048 * 4  # float32 LSTM weights, X = H
    assert on2.plan(100, 64, 2.0 * 4 * 512 * 1024, at_512) == RunPlan(2, 1)
    assert on2.plan(100, 32, 2.0 * 4 * 1024 * 2048, at_1024) == RunPlan(1, 2)
    lstm = instantiate(library_cells()["LSTM"], 1024, 1024, dtype=np.float32, backend="numba")
    lstm.parallel = on2
    assert lstm._plan(100, 32) == RunPlan(1, 2)
    lstm = instantiate(library_cells()["LSTM"], 512, 512, dtype=np.float32, backend="numba")
    lstm.parallel = on2
    assert lstm._plan(100, 64) == RunPlan(2, 1)


def test_shard_rows_cover_the_batch_in_order_as_equal_as_can_be():
    assert shard_rows(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    for B, n in [(7, 7), (9, 2), (100, 16)]:
        rows = shard_rows(B, n)
        assert rows[0].start == 0 and rows[-1].stop == B and len(rows) == n
        assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))
        assert max(r.stop - r.start for r in rows) - min(r.stop - r.start for r in rows) <= 1


def run_both(cell, p, x, lengths, dout):
    cell.parallel = Parallelism(1)
    r1 = cell.forward(p, x, lengths)
    g1 = cell.backward(p, r1, dout)
    cell.parallel = FORCED
    r2 = cell.forward(p, x, lengths)
    g2 = cell.backward(p, r2, dout)
    return r1, g1, r2, g2


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_sharded_and_unsharded_runs_agree_and_padding_stays_out(name):
    cell = instantiate(library_cells()[name], 5, 3, backend="numba")
    p = cell.init_params(2)
    rng = np.random.default_rng(0)
    lengths = np.array([7, 3, 0, 7, 1, 5, 2])
    x = rng.normal(size=(7, 7, 3))
    for b, n in enumerate(lengths):
        x[n:, b] = np.nan  # never read: padding
    dout = rng.normal(size=(7, 7, 5))
    r1, g1, r2, g2 = run_both(cell, p, x, lengths, dout)
    assert [s.rows for s in r2.trace.tape] == shard_rows(7, 4)
    np.testing.assert_allclose(r2.outputs, r1.outputs, rtol=1e-12, atol=1e-14)
    for n in r1.final:
        np.testing.assert_allclose(r2.final[n], r1.final[n], rtol=1e-12, atol=1e-14)
    for k in g1.params:
        np.testing.assert_allclose(g2.params[k], g1.params[k], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g2.inputs["x"], g1.inputs["x"], rtol=1e-10, atol=1e-13)
    assert np.isfinite(g2.inputs["x"]).all() and np.isfinite(r2.outputs).all()


def test_a_sharded_result_goes_back_sharded_whatever_the_cell_plans_now():
    cell = instantiate(library_cells()["LSTM"], 4, 3, backend="numba")
    p = cell.init_params(0)
    x = np.random.default_rng(1).normal(size=(3, 6, 3))
    dout = np.ones((3, 6, 4))
    cell.parallel = FORCED
    r = cell.forward(p, x)
    cell.parallel = Parallelism(1)  # backward follows the trace, not the plan
    g = cell.backward(p, r, dout)
    g1 = cell.backward(p, cell.forward(p, x), dout)
    for k in g1.params:
        np.testing.assert_allclose(g.params[k], g1.params[k], rtol=1e-10, atol=1e-13)


def test_a_changed_sharded_trace_is_refused():
    cell = instantiate(library_cells()["GRU"], 4, 3, backend="numba")
    p = cell.init_params(0)
    cell.parallel = FORCED
    x = np.random.default_rng(2).normal(size=(3, 8, 3))
    dout = np.ones((3, 8, 4))
    r = cell.forward(p, x)
    first = r.trace.tape[0]
    broken = [
        [Shard(first.rows, first.x, first.tape[:-1]), *r.trace.tape[1:]],  # a tape missing
        r.trace.tape[1:],  # rows not covered
        [Shard(slice(0, 3), first.x, first.tape), *r.trace.tape[1:]],  # rows not its arrays'
        [Shard(first.rows, [first.x[0][:, :1]], first.tape), *r.trace.tape[1:]],
        [Shard(first.rows, first.x, [t.astype(np.float32) for t in first.tape]),
         *r.trace.tape[1:]],
    ]
    for tape in broken:
        r.trace.tape = tape
        with pytest.raises(SeqError, match="not as its forward made them"):
            cell.backward(p, r, dout)


def test_a_generated_cell_with_a_scalar_and_a_transpose_agrees_sharded():
    src = ("cell Anti {\n input x\n state h : H\n param γ : 1\n"
           " h<t> = tanh((W - Wᵀ - γ * I) h + V x + b)\n output h\n}\n")
    cell = instantiate(loads(src).cell(), 4, 2, backend="numba")
    p = cell.init_params(5)
    rng = np.random.default_rng(3)
    x, dout = rng.normal(size=(4, 5, 2)), rng.normal(size=(4, 5, 4))
    r1, g1, r2, g2 = run_both(cell, p, x, np.array([4, 2, 4, 1, 3]), dout)
    np.testing.assert_allclose(r2.outputs, r1.outputs, rtol=1e-12, atol=1e-14)
    for k in g1.params:  # the scalar's gradient sums over every shard's rows too
        np.testing.assert_allclose(g2.params[k], g1.params[k], rtol=1e-10, atol=1e-13)


def test_the_thread_count_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_count() == shards.available_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count() == 3
    monkeypatch.setenv("NUMBA_NUM_THREADS", "5")
    assert thread_count() == 5
    assert thread_count(2) == 2
    # (Numba refuses to compile once NUMBA_NUM_THREADS differs from the
    # threads it has started, as a network's sharded step starts them)
    monkeypatch.delenv("NUMBA_NUM_THREADS")
    cell = instantiate(library_cells()["RNN"], 4, 3, backend="numba", threads=7)
    assert cell.parallel.threads == 7
    monkeypatch.setenv("NUMBA_NUM_THREADS", "-1")
    with pytest.raises(SeqError, match="NUMBA_NUM_THREADS='-1'"):
        thread_count()
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(SeqError, match="threads: expected a positive integer"):
            thread_count(bad)


def test_a_network_passes_its_thread_count_to_its_cells():
    spec = loads("network N {\n input x\n h = bidirectional(GRU(H=4))(x)\n"
                 " output ŷ<t> = softmax(Wy h<t>)\n}")
    net = instantiate(spec.network("N"), sizes={"X": 3, "Y": 2}, backend="numba", threads=3)
    assert {c.runner.parallel.threads for layer in net.layers.values()
            for _, c in layer.cells()} == {3}


def test_blas_threads_are_restored_after_a_run():
    libs = blas.kernel_blas()
    if not libs:
        pytest.skip("threadpoolctl sees no BLAS library here")
    before = [lib.get_num_threads() for lib in libs]
    with blas.blas_threads(1):
        assert all(lib.get_num_threads() == 1 for lib in libs)
    assert [lib.get_num_threads() for lib in libs] == before


def test_every_job_runs_and_an_error_in_one_reaches_the_caller():
    seen = []
    lock = threading.Lock()

    def job(i):
        with lock:
            seen.append((i, threading.current_thread().name))
        return i * i
    assert shards.run_each(job, list(range(5))) == [0, 1, 4, 9, 16]
    assert sorted(i for i, _ in seen) == list(range(5))
    assert seen and any(name.startswith("seqdsl-shard") for _, name in seen)

    def fails(i):
        if i == 1:
            raise ValueError("shard 1 failed")
        return i
    with pytest.raises(ValueError, match="shard 1 failed"):
        shards.run_each(fails, [0, 1, 2])


def test_shard_gradients_are_summed_exactly():
    rng = np.random.default_rng(4)
    parts = [[rng.normal(size=(5, 7)), rng.normal(size=3)] for _ in range(4)]
    want = [sum(p[k] for p in parts) for k in range(2)]
    got = shards.sum_into_first([[a.copy() for a in p] for p in parts])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-15)


def test_a_network_of_sharded_cells_gives_the_same_loss_and_gradients():
    spec = loads("network N {\n input x\n h = stack(bidirectional(GRU(H=4)), LSTM(H=3))(x)\n"
                 " output ŷ<t> = softmax(Wy h<t>)\n}")
    net = instantiate(spec.network("N"), sizes={"X": 3, "Y": 5}, backend="numba")
    p = net.init_params(1)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 7, 3))
    lengths = np.array([6, 2, 5, 1, 6, 3, 4])
    targets = rng.integers(0, 5, size=(6, 7))
    runners = [c.runner for layer in net.layers.values() for _, c in layer.cells()]
    got = []
    for parallel in (Parallelism(1), FORCED):
        for r in runners:
            r.parallel = parallel
        got.append(net.loss_and_grad(p, {"x": x}, {"x": lengths}, targets))
    (l1, g1), (l2, g2) = got
    assert abs(l1 - l2) <= 1e-12 * abs(l1)
    assert len(runners) == 3 and set(g1) == set(g2) == set(p)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_a_step_shards_in_one_loop_only_on_a_layer_whose_threads_hand_off_fast(layer):
    """On OpenMP or TBB a network's step runs its shards in one parallel loop;
    asked for the workqueue, no Numba thread starts (so NUMBA_NUM_THREADS
    may still change) and shards go to Python's threads."""
    code = ("import numba\n"
            "from seqdsl.runtime.numba.shards import parallel_loops_hand_off_fast as fast\n"
            "on = fast()\n"
            "try:\n    layer = numba.threading_layer()\n"
            "except ValueError:\n    layer = 'none'\n"
            "print(on, layer)\n")
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    if layer == "workqueue":
        assert out == ["False", "none"]
    else:
        assert out[0] == str(out[1] in ("omp", "tbb")) and out[1] != "none"
