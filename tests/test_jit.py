"""The Numba backend against the NumPy reference runtime: outputs, final
states and every gradient, with variable lengths, B = 1, T = 1 and a given
initial state; float64 to 1e-10 and float32 to 1e-4 (relative). Each
comparison runs the compiled cell every way (PATHS): unsharded, with its
batch split into shards on threads, with every step product over packed
weights, on BLIS (each forced here at sizes where it would never happen)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import Phase, example, given, settings

from cellgen import cells, sizes_for
from seqdsl.runtime.numba import gemm
from seqdsl.runtime.numba.gemm import every_product_on_blis
from seqdsl.runtime.numba.packing import every_step_product_packed
from seqdsl.runtime.numba.shards import Parallelism, Shard
from seqdsl.tools.gradcheck import random_problem, relative_error
from seqdsl.spec import instantiate, library_cells, loads

SERIAL = Parallelism(1)
# Up to three shards whenever the batch has two rows or more.
SHARDED = Parallelism(3, min_rows=1, min_flops=0, min_shards=2)
# Unsharded on two threads: every product split over them, on BLIS (gemm.py).
THREADED = Parallelism(2, min_rows=10**9, small_step_flops=0)

# Every size here is below the products BLIS takes, and the step products
# packed, by default (gemm.py): the first two paths run OpenBLAS's products,
# the "packed" ones every step product over packed weights (packed.py, on any
# CPU), the others BLIS's, every one of them.
PATHS = [("", SERIAL, None), ("sharded ", SHARDED, None),
         ("packed ", SERIAL, "packed"), ("sharded packed ", SHARDED, "packed"),
         ("packed on 2 threads ", THREADED, "packed")] + (
    [("on BLIS ", SERIAL, "blis"), ("sharded on BLIS ", SHARDED, "blis"),
     ("split on BLIS ", THREADED, "blis")] if gemm.available() else [])

TOL = {np.float64: 1e-10, np.float32: 1e-4}
# CI compiles 25 generated cells (each costs a compile); SEQDSL_JIT_EXAMPLES=300 for a long run.
EXAMPLES = int(os.environ.get("SEQDSL_JIT_EXAMPLES", "25"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    os.environ["SEQDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


# (T, B): B = 9 takes the backward's transposed product (from B = 8 on).
def compare(ct, dtype, hidden=4, input=3, shapes=((5, 3), (1, 1), (1, 4), (6, 1), (3, 9)),
            seed=0):
    sizes = sizes_for(ct)  # a generated cell's M and Y
    ref = instantiate(ct, hidden, input, sizes, dtype=np.float64)
    jit = instantiate(ct, hidden, input, sizes, dtype=dtype, backend="numba")
    worst = {}
    for i, (T, B) in enumerate(shapes):
        pb = random_problem(ref, T, B, seed + i)
        if dtype == np.float32:  # compare like with like: both from float32-rounded inputs
            pb.params = {k: v.astype(np.float32).astype(np.float64) for k, v in pb.params.items()}
        r1 = ref.forward(pb.params, pb.x, pb.lengths, pb.state0)
        g1 = ref.backward(pb.params, r1, pb.w_out, pb.w_final)
        for path, parallel, products in PATHS:
            jit.parallel = parallel
            with every_product_on_blis(products == "blis"), \
                    every_step_product_packed(products == "packed"):
                r2 = jit.forward(pb.params, pb.x, pb.lengths, pb.state0)
                g2 = jit.backward(pb.params, r2, pb.w_out, pb.w_final)
            assert any(isinstance(s, Shard) for s in r2.trace.tape) == (parallel is SHARDED
                                                                       and B > 1)
            for k, v in gaps(r1, g1, r2, g2, dtype).items():
                worst[path + k] = max(worst.get(path + k, 0), v)
    return worst


def gaps(r1, g1, r2, g2, dtype) -> dict:
    """The relative error of every output, final state and gradient of the
    compiled run (r2, g2) against the reference run (r1, g1)."""
    assert r2.outputs.dtype == dtype
    got = {"outputs": (r1.outputs, r2.outputs)}
    got.update((f"final {k}", (r1.final[k], r2.final[k])) for k in r1.final)
    got.update((f"d{k}", (g1.params[k], g2.params[k])) for k in g1.params)
    got.update((f"d{k}", (g1.inputs[k], g2.inputs[k])) for k in g1.inputs)
    got.update((f"d{k}<0>", (g1.state0[k], g2.state0[k])) for k in g1.state0)
    # Values that cancel to (nearly) zero are held to an absolute error
    # against the scale of the whole problem, as rounding noise is.
    floor = 1e-3 * max(np.abs(a).max(initial=0) for a, _ in got.values())
    out = {}
    for k, (a, b) in got.items():
        assert b.dtype == dtype, k
        out[k] = relative_error(a, b.astype(np.float64), floor)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(library_cells()))
def test_shipped_cells_match_the_reference(name, dtype):
    worst = compare(library_cells()[name], dtype)
    bad = {k: v for k, v in worst.items() if v > TOL[dtype]}
    assert not bad, bad


# Each example costs a compile, so a failure is reported as found, not shrunk.
@settings(max_examples=EXAMPLES, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(src=cells())
# Cells that once broke the folding of zero terms (a weight shared across
# operands; a cotangent folded away that a hoisted product still read).
@example(src="cell Gen {\n input x\n state h, c, m : H\n g0 = m / 2\n"
             " g2 = (W2[(-c), c] + c)\n h<t> = (1.5 * tanh(σ(W3[x, g2] + b0)))\n"
             " c<t> = σ(W4 x + b0) * (b0 * log(1 + σ(W2[g2, h<t>])) + b0)"
             " + (1 - σ(W4 x + b0)) * c\n m<t> = σ(W4 x + b0) * layernorm(softmax(g0))"
             " + (1 - σ(W4 x + b0)) * m\n output h\n}\n")
@example(src="cell Gen {\n input x\n state h, c, m : H\n g0 = (W0 x + c)\n"
             " m<t> = σ(W1[(W0[x] + h), x] + b0) * σ(W1[g0, x] + b0)\n"
             " c<t> = σ(W3[(W2[x, g0] + g0)] + b0)\n"
             " h<t> = σ(W7[m<t>, (W6[m, x, c<t>] + g0)] + b3) * (1 - (W5[m<t>] / 0.5 + W0 x))\n"
             " output h\n}\n")
def test_generated_cells_match_the_reference(src):
    worst = compare(loads(src, "generated.seq").cell(), np.float64, hidden=3, input=2,
                    shapes=((4, 3), (1, 1), (2, 8)))
    bad = {k: v for k, v in worst.items() if v > TOL[np.float64]}
    assert not bad, f"{bad}\n{src}"


def test_products_are_stacked_and_hoisted():
    cell = instantiate(library_cells()["LSTM"], 8, 5, dtype=np.float32, backend="numba")
    src = cell.source
    # one product per step for the four gates reading a<t-1>, one before the loop for x
    assert src.count("dot_into(ST_a_prev[_c:_c + rows_a_prev], state_a.T, "
                     "PT_a_prev[_c:_c + rows_a_prev])") == 1
    assert ("P_x = dot(in_x.reshape((_T * _B, n_X)), ST_x.T).reshape((_T, _B, 4 * n_H))"
            in src)
    loop = src[src.index("for _t in range(_T):"):src.index("return out")]
    assert loop.count("dot_into(") == 1 and "concatenate" not in src
    # weight gradients: one product per operand over all steps, after the backward loop
    after = src[src.index("# after the loop"):]
    assert after.count("dS = dot(") == 2
    # d x is all in the hoisted product: the backward step neither adds nor stores zeros
    step = src[src.index("for _t in range(_T - 1, -1, -1):"):src.index("# after the loop")]
    assert step.count("dot_into(") == 2  # the same product in the orientation for the batch
    assert "dx_x" not in step and "+ K0" not in step and "K0 +" not in step
    assert "dx_x = dot(dY_a_prev.reshape" in after
    # each transposed step product is laid out batch-major by the library's copy
    assert src.count("transpose_into(PT_a_prev, P_a_prev)") == 1
    assert src.count("transpose_into(dPT_a_prev, dP_a_prev)") == 1
    # every product and allocation is library.py's compiled-once function, never NumPy's
    assert "np.dot(" not in src and "np.empty(" not in src and "np.zeros(" not in src


def test_source_is_readable_and_stays_float32():
    cell = instantiate(library_cells()["LSTM"], 8, 5, dtype=np.float32, backend="numba")
    src = cell.source
    assert "# Γu: B×H = sigmoid(t2)" in src and "G_u = sigmoid(t2)" in src
    assert "c_tilde = tanh(t8)" in src and "DT = np.float32" in src
    code = [l for l in src.splitlines() if not l.lstrip().startswith(("#", "K", '"""'))]
    assert not [l for l in code if re.search(r"(?<![\w.])\d+\.\d+", l)], "bare float literals"
    r = cell.forward(cell.init_params(), np.ones((3, 2, 5), np.float32))
    assert r.outputs.dtype == np.float32 and r.final["c"].dtype == np.float32


def test_second_process_loads_from_the_cache(tmp_path):
    env = {**os.environ, "SEQDSL_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "seqdsl", "compile", "seqdsl/lang/library/rnn.seq", "--hidden", "16",
           "--input", "8"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    assert "(compiled, now cached)" in first.stdout
    assert "(cache hit)" in second.stdout
    seconds = float(re.search(r"compile\s+([\d.]+) s", second.stdout).group(1))
    assert seconds < 5  # loading, not compiling (a cold compile takes several seconds)
    [py] = list(tmp_path.glob("*/seqdsl_*.py"))  # one folder per cache entry
    # The source holds no size: the kernels take them as arguments.
    assert py.read_text().startswith('"""cell RNN (float32), generated by seqdsl"""')


def test_cli_compile_emits_source_and_graph_and_gradchecks_compiled_code(run_cli):
    code, out, _ = run_cli("compile", "seqdsl/lang/library/gru.seq", "--hidden", 6, "--input", 4,
                           "--dtype", "float64", "--emit", "source")
    assert code == 0 and "def forward(n_H, n_X, x, lengths, c0, Wr, br, Wu, bu, Wc, bc):" in out
    assert "# c̃: B×H = tanh(t7)" in out and "DT = np.float64" in out
    code, out, _ = run_cli("compile", "seqdsl/lang/library/gru.seq", "--hidden", 6, "--input", 4,
                           "--dtype", "float64", "--emit", "graph")
    assert code == 0 and "graph GRU.backward" in out
    assert "x (4) × [Wr[:, 6:10]ᵀ | Wu[:, 6:10]ᵀ | Wc[:, 6:10]ᵀ] → 18   hoisted" in out
    code, out, err = run_cli("gradcheck", "seqdsl/lang/library/gru.seq", "--backend", "numba", "--hidden", 6,
                             "--input", 4)
    assert code == 0 and "float64, numba" in out and out.rstrip().endswith("within 1e-06"), err


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_padding_never_reaches_results_or_gradients(name):
    # B = 9: the backward's transposed products; padding holds NaN and inf.
    cell = instantiate(library_cells()[name], 4, 3, backend="numba")
    p = cell.init_params(3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 9, 3))
    lengths = np.array([6, 2, 0, 5, 6, 1, 3, 6, 4])
    dirty = x.copy()
    for b, n in enumerate(lengths):
        dirty[n:, b] = np.nan if b % 2 else np.inf
    r, r2 = cell.forward(p, x, lengths), cell.forward(p, dirty, lengths)
    np.testing.assert_array_equal(r.outputs, r2.outputs)
    for b, n in enumerate(lengths):
        assert not r2.outputs[n:, b].any()
    d = rng.normal(size=r.outputs.shape)
    g, g2 = cell.backward(p, r, d), cell.backward(p, r2, d)
    for k in g.params:
        np.testing.assert_array_equal(g.params[k], g2.params[k])
    for b, n in enumerate(lengths):
        assert not g2.inputs["x"][n:, b].any()
        assert np.isfinite(g2.inputs["x"]).all()


def test_a_large_weight_is_applied_in_blocks_of_rows(monkeypatch):
    from seqdsl.runtime.numba import kernels
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 200)
    ct = library_cells()["LSTM"]
    src = instantiate(ct, 4, 3, backend="numba").source
    # The rows per block are worked out at run time, from the sizes: for the
    # LSTM's 16×4 float64 weight (512 bytes), three blocks of at most 6 rows.
    rows = "-(-ST_a_prev.shape[0] // -(-ST_a_prev.nbytes // 200))"
    assert f"rows_a_prev = {rows}" in src
    assert "for _c in range(0, 4 * n_H, rows_a_prev):" in src
    assert eval(rows, {"ST_a_prev": np.empty((16, 4))}) == 6
    worst = compare(ct, np.float64)
    assert max(worst.values()) < TOL[np.float64], worst


@pytest.mark.parametrize("rows, cols", [(1, 5), (9, 33), (16, 1024), (20, 1030), (32, 8),
                                        (33, 517), (40, 12), (64, 2048), (37, 1027)])
def test_transpose_into_copies_every_entry_in_each_loop_order(rows, cols):
    # row by row, blocks of 8 and blocks of 16 columns, with and without a tail
    from seqdsl.runtime.numba.copies import transpose_into
    for dtype in (np.float32, np.float64):
        src = np.arange(rows * cols, dtype=dtype).reshape(cols, rows)
        dst = np.full((rows, cols), np.nan, dtype)
        transpose_into(src, dst)
        np.testing.assert_array_equal(dst, src.T)
