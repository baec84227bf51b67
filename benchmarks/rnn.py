"""seqdsl against PyTorch (and JAX, if installed), side by side in one run.

    python benchmarks/rnn.py [--quick] [--repeats N] [--out benchmarks/RESULTS.md]
    python benchmarks/rnn.py --threads 1,2,all [--shapes 32x256x256,1x32x64]
                             [--cells LSTM] [--modes fwd+bwd] [--rounds N]
                             [--impls seqdsl,torch]

Times LSTM (seqdsl vs torch.nn.LSTM) and the peephole LSTM (seqdsl vs a
PyTorch eager loop), both also against JAX's lax.scan under jit, forward and
forward+backward, float32, T=100, for each (B, X, H). Every measurement runs
in its own subprocess, the implementations alternating, and reports the
median of repeated runs after warm-up: two BLAS/OpenMP thread pools in one
process slow each other down, and the machine drifts. It also measures the
machine's GEMM rate and prints each time as a multiple of the GEMM-FLOP lower
bound (the time the step's matrix products alone would take at that rate).

With --threads, it instead measures thread scaling: every measurement at each
thread count (`all` = os.cpu_count()), the count given to every implementation
the same way, before its process starts (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS, NUMBA_NUM_THREADS; torch.set_num_threads in the torch worker),
and writes the times, the scaling efficiency t1 / (n * tn) and the serial
fraction into RESULTS.md's "## Thread scaling, N cores" section, the rest kept. (XLA
reads none of those variables: at 1 thread JAX's process gets XLA_FLAGS that
turn its Eigen pool off; at more, XLA sizes its pool by itself.)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1, 32, 64), (32, 64, 128), (32, 256, 256), (64, 512, 512), (256, 512, 512),
          (32, 1024, 1024)]
T = 100
THREADS = os.cpu_count() or 1
# What sets a process's thread count; read when the libraries load, so they are
# set in the environment the measurement's process starts with.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

# ---- workers: each runs in a fresh process and prints one JSON line -----------------


def worker_result(script: str, worker: str, repeats: int) -> dict:
    """What `python SCRIPT --worker WORKER --repeats N` printed last (JSON),
    run in a process of its own that imports this checkout's seqdsl."""
    out = subprocess.run([sys.executable, script, "--worker", worker, "--repeats",
                          str(repeats)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{worker} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timeit(fn, repeats: int, budget: float = 20.0) -> list[float]:
    fn()  # warm-up (compiles, allocates)
    fn()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget and len(times) >= 3:
            break
    return times


def _data(B, X, H, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, X)).astype(np.float32), rng


def work_seqdsl(cell: str, B: int, X: int, H: int, mode: str, repeats: int,
                threads: int | None = None) -> list[float]:
    import numpy as np

    import seqdsl
    from seqdsl.spec import library_cells
    c = seqdsl.instantiate(library_cells()[cell], H, X, dtype=np.float32, backend="numba")
    p = c.init_params(0)
    x, _ = _data(B, X, H)
    dout = np.ones((T, B, H), np.float32)

    def run():
        r = c.forward(p, x)
        if mode == "fwd+bwd":
            c.backward(p, r, dout)
    return _timeit(run, repeats)


def work_torch(cell: str, B: int, X: int, H: int, mode: str, repeats: int,
               threads: int | None = None) -> list[float]:
    import torch
    torch.set_num_threads(threads or THREADS)
    torch.manual_seed(0)
    x = torch.randn(T, B, X)
    if cell == "LSTM":
        net = torch.nn.LSTM(X, H)

        def forward():
            return net(x)[0]
    else:  # the peephole LSTM as a PyTorch user would write it: an eager loop
        W = {g: torch.nn.Parameter(torch.randn(H, H + X) / (H + X) ** 0.5)
             for g in "ufco"}
        b = {g: torch.nn.Parameter(torch.zeros(H)) for g in "ufco"}
        pe = {g: torch.nn.Parameter(torch.zeros(H)) for g in "ufo"}

        def forward():
            a, c = torch.zeros(B, H), torch.zeros(B, H)
            outs = []
            for t in range(T):
                ax = torch.cat([a, x[t]], 1)
                gu = torch.sigmoid(ax @ W["u"].T + pe["u"] * c + b["u"])
                gf = torch.sigmoid(ax @ W["f"].T + pe["f"] * c + b["f"])
                ct = torch.tanh(ax @ W["c"].T + b["c"])
                c = gu * ct + gf * c
                go = torch.sigmoid(ax @ W["o"].T + pe["o"] * c + b["o"])
                a = go * torch.tanh(c)
                outs.append(a)
            return torch.stack(outs)

    def run():
        if mode == "fwd":
            with torch.no_grad():
                forward()
        else:
            forward().sum().backward()
    return _timeit(run, repeats)


def work_jax(cell: str, B: int, X: int, H: int, mode: str, repeats: int,
             threads: int | None = None) -> list[float]:
    import jax
    import jax.numpy as jnp
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (T, B, X), jnp.float32)
    params = {f"W{g}": jax.random.normal(jax.random.fold_in(key, i), (H, H + X)) / (H + X) ** .5
              for i, g in enumerate("ufco")}
    params.update({f"b{g}": jnp.zeros(H) for g in "ufco"})
    peep = cell != "LSTM"  # the peephole terms, or none
    if peep:
        params.update({f"p{g}": jnp.zeros(H) for g in "ufo"})

    def step(carry, xt, p):
        a, c = carry
        ax = jnp.concatenate([a, xt], 1)
        gu = jax.nn.sigmoid(ax @ p["Wu"].T + (p["pu"] * c if peep else 0) + p["bu"])
        gf = jax.nn.sigmoid(ax @ p["Wf"].T + (p["pf"] * c if peep else 0) + p["bf"])
        ct = jnp.tanh(ax @ p["Wc"].T + p["bc"])
        c = gu * ct + gf * c
        go = jax.nn.sigmoid(ax @ p["Wo"].T + (p["po"] * c if peep else 0) + p["bo"])
        a = go * jnp.tanh(c)
        return (a, c), a

    def loss(p, xs):
        z = jnp.zeros((B, H), jnp.float32)
        _, ys = jax.lax.scan(lambda carry, xt: step(carry, xt, p), (z, z), xs)
        return ys.sum()

    # Gradients for the parameters and the input, as seqdsl and torch compute.
    f = jax.jit(loss if mode == "fwd" else jax.grad(loss, argnums=(0, 1)))

    def run():
        jax.block_until_ready(f(params, x))
    return _timeit(run, repeats)


def work_gemm(n: int, repeats: int, blis: bool = False) -> float | None:
    """The machine's float32 GEMM rate (FLOP/s) through NumPy's BLAS on all
    its threads, or (`blis`) through the kernels' BLIS products (gemm.py),
    one product on each thread at once, as a sharded run makes them; None
    where BLIS is not there."""
    import numpy as np
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    if not blis:
        return 2 * n ** 3 / statistics.median(_timeit(lambda: a @ b, repeats))
    from concurrent.futures import ThreadPoolExecutor

    from seqdsl.runtime.numba import blas, gemm, library
    if not gemm.available():
        return None
    outs = [np.empty((n, n), np.float32) for _ in range(THREADS)]
    with gemm.blis_preferred(), blas.blas_threads(1), ThreadPoolExecutor(THREADS) as pool:
        def on_every_thread():
            list(pool.map(lambda out: library.dot_into(a, b, out), outs))
        times = _timeit(on_every_thread, repeats)
    return THREADS * 2 * n ** 3 / statistics.median(times)


WORKERS = {"seqdsl": work_seqdsl, "torch": work_torch, "jax": work_jax}

# ---- driver --------------------------------------------------------------------------


def thread_env(threads: int | None) -> dict:
    """The environment a measurement's process starts with: `threads` for
    every library's thread pool, or, with None, this process's own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    if threads is not None:
        env.update({v: str(threads) for v in THREAD_VARS})
        if threads == 1:  # XLA reads none of them; this is its one-thread switch
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
    return env


def pools() -> dict:
    """The thread pools this process has loaded, and their sizes (a check that
    the thread count took: `blas:<library>`, `openmp:<library>`, `torch`)."""
    got = {}
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            got[f"{p['user_api']}:{os.path.basename(p['filepath']).split('-')[0]}"] = \
                p["num_threads"]
    except Exception:
        pass
    if "torch" in sys.modules:
        got["torch"] = sys.modules["torch"].get_num_threads()
    if "numba" in sys.modules:
        got["numba"] = sys.modules["numba"].get_num_threads()
    return got


def _in_subprocess(args: dict, timeout: float = 900, threads: int | None = None) -> dict:
    env = thread_env(threads)
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_flops(cell: str, B: int, X: int, H: int, mode: str) -> float:
    """Matrix-product FLOPs of T steps: the forward's 4 gate products over
    [a, x], and for the backward the products for d[a, x] and for dW."""
    fwd = 2 * B * 4 * H * (H + X) * T
    return fwd if mode == "fwd" else 3 * fwd


def has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the three smaller shapes only")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds per measurement; the median over all is kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--threads", type=thread_counts, metavar="N,N,...",
                    help="measure thread scaling at these counts (e.g. 1,2,all; all = "
                         f"os.cpu_count() = {THREADS}) and write RESULTS.md's "
                         "'## Thread scaling, N cores' section")
    ap.add_argument("--shapes", type=shape_list, metavar="BxXxH,...",
                    help="the (B, X, H) to measure (default: those of --quick or all: "
                         + ", ".join("x".join(map(str, s)) for s in SHAPES) + ")")
    ap.add_argument("--cells", type=lambda s: s.split(","), default=["LSTM", "PeepholeLSTM"],
                    help="comma-separated, from LSTM,PeepholeLSTM (default both)")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["fwd", "fwd+bwd"],
                    help="comma-separated, from fwd,fwd+bwd (default both)")
    ap.add_argument("--impls", type=lambda s: s.split(","), default=None,
                    help="comma-separated, from seqdsl,torch,jax (default: all installed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec["impl"] == "gemm":
            print(json.dumps({"rate": work_gemm(spec["n"], spec["repeats"], spec["blis"])}))
        else:
            fn = WORKERS[spec["impl"]]
            times = fn(spec["cell"], spec["B"], spec["X"], spec["H"], spec["mode"], spec["repeats"],
                       spec.get("threads"))
            print(json.dumps({"times": times, "pools": pools()}))
        return

    shapes = args.shapes or (SHAPES[:3] if args.quick else SHAPES)
    for c in args.cells:
        if c not in ("LSTM", "PeepholeLSTM"):
            ap.error(f"--cells: {c!r} is not LSTM or PeepholeLSTM")
    for m in args.modes:
        if m not in ("fwd", "fwd+bwd"):
            ap.error(f"--modes: {m!r} is not fwd or fwd+bwd")
    impls = {c: ["seqdsl", "torch"] for c in args.cells}
    if has("jax"):
        for names in impls.values():
            names.append("jax")
    if args.impls:
        for c, names in impls.items():
            impls[c] = [n for n in names if n in args.impls]
    if args.threads:
        sweep(args, shapes, impls)
        return
    print(f"threads: {THREADS}; measuring the GEMM rate ...", flush=True)
    rates = {way: max(_in_subprocess({"impl": "gemm", "n": n, "repeats": 9, "blis": blis})
                      ["rate"] or 0 for n in (1024, 2048))
             for way, blis in (("OpenBLAS", False), ("BLIS", True))}
    rate = max(rates.values())
    print("GEMM: " + ", ".join(f"{way} {r / 1e9:.1f}" for way, r in rates.items() if r)
          + " GFLOP/s (float32)", flush=True)
    rows = []
    for cell, names in impls.items():
        for (B, X, H) in shapes:
            for mode in args.modes:
                times = {n: [] for n in names}
                for r in range(args.rounds):  # alternate the implementations
                    for n in (names if r % 2 == 0 else names[::-1]):
                        res = _in_subprocess({"impl": n, "cell": cell, "B": B, "X": X, "H": H,
                                              "mode": mode, "repeats": args.repeats})
                        times[n] += res.get("times", [])
                med = {n: statistics.median(t) if t else None for n, t in times.items()}
                bound = gemm_flops(cell, B, X, H, mode) / rate
                row = {"cell": cell, "B": B, "X": X, "H": H, "mode": mode, "median": med,
                       "bound": bound}
                rows.append(row)
                print(_line(row, names), flush=True)
    write_results(args.out, rows, rates, impls)


def thread_counts(text: str) -> list[int]:
    """`1,2,all` -> [1, 2, os.cpu_count()], in order, without repeats."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        n = THREADS if part == "all" else int(part) if part.isdigit() else 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"{part!r} is not a thread count or 'all'")
        if n not in out:
            out.append(n)
    return out


def shape_list(text: str) -> list[tuple[int, int, int]]:
    """`32x256x256,1x32x64` -> [(32, 256, 256), (1, 32, 64)]."""
    out = []
    for part in text.split(","):
        dims = part.strip().lower().replace("(", "").replace(")", "").replace(" ", "").split("x")
        if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise argparse.ArgumentTypeError(f"{part!r} is not B x X x H, e.g. 32x256x256")
        out.append(tuple(int(d) for d in dims))
    return out


def _load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def sweep(args, shapes, impls) -> None:
    """Each (cell, shape, pass) at each thread count, every implementation in
    its own process; per round the thread counts and the implementations both
    alternate their order, so the machine's drift falls on all of them."""
    counts = args.threads
    load_before = _load()
    peak = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    print(f"thread counts {counts} (os.cpu_count() = {THREADS}); load {load_before}", flush=True)
    rows = []
    for cell, names in impls.items():
        for (B, X, H) in shapes:
            for mode in args.modes:
                times = {(n, k): [] for n in names for k in counts}
                per_round = {(n, k): [] for n in names for k in counts}
                seen = {}
                for r in range(args.rounds):
                    for k in (counts if r % 2 == 0 else counts[::-1]):
                        for n in (names if (r // 2) % 2 == 0 else names[::-1]):
                            res = _in_subprocess({"impl": n, "cell": cell, "B": B, "X": X,
                                                  "H": H, "mode": mode, "repeats": args.repeats,
                                                  "threads": k}, threads=k)
                            if "error" in res:
                                print(f"  {n} at {k} threads failed: {res['error']}", flush=True)
                            times[(n, k)] += res.get("times", [])
                            if peak:
                                peak.append(os.getloadavg()[0])
                            per_round[(n, k)].append(statistics.median(res["times"])
                                                     if res.get("times") else None)
                            seen.setdefault((n, k), res.get("pools"))
                med = {nk: statistics.median(t) if t else None for nk, t in times.items()}
                row = {"cell": cell, "B": B, "X": X, "H": H, "mode": mode, "median": med,
                       "rounds": per_round, "pools": seen}
                rows.append(row)
                print(_scaling_line(row, names, counts), flush=True)
    load_after = _load()
    print(f"load {load_after}", flush=True)
    write_scaling(Path(args.out), rows, impls, counts, args, (load_before, load_after),
                  max(peak, default=None))


def scaling(med: dict, name: str, counts: list[int]) -> tuple[dict, float | None, int | None]:
    """({n: efficiency t1 / (n * tn)}, serial fraction, its n) of one
    implementation. The serial fraction is Karp–Flatt's at the largest
    count n: (tn / t1 - 1/n) / (1 - 1/n), on 2 threads 2 * t2 / t1 - 1 (Amdahl's
    s, had the rest scaled perfectly); it needs t1, so None without it."""
    t1 = med.get((name, 1))
    eff = {n: t1 / (n * med[(name, n)]) if t1 and med.get((name, n)) else None
           for n in counts if n != 1}
    top = max((n for n in counts if n > 1), default=None)
    s = None
    if t1 and top and med.get((name, top)):
        s = (med[(name, top)] / t1 - 1 / top) / (1 - 1 / top)
    return eff, s, top


def round_ratios(row, name: str, counts: list[int]) -> list[float]:
    """Per round, the largest count's time over the one-thread time: how
    steady the scaling was from round to round (sorted)."""
    top = max(counts)
    if 1 not in counts or top == 1:
        return []
    return sorted(a / b for a, b in zip(row["rounds"][(name, top)], row["rounds"][(name, 1)])
                  if a and b)


def _pct(x):
    return "—" if x is None else f"{x * 100:.0f}%"


def _frac(x):
    return "—" if x is None else f"{x:.2f}"


def _scaling_line(row, names, counts) -> str:
    med = row["median"]
    parts = [f"{row['cell']:<13}({row['B']:>3},{row['X']:>5},{row['H']:>5}) {row['mode']:<8}"]
    for n in names:
        eff, s, top = scaling(med, n, counts)
        ts = " ".join(f"{k}t {_ms(med[(n, k)])}" for k in counts)
        rr = round_ratios(row, n, counts)
        parts.append(f"{n}: {ts} ms; eff " + " ".join(f"{k}t {_pct(e)}" for k, e in eff.items())
                     + (f", serial {_frac(s)}" if top else "")
                     + (f"; t{top}/t1 per round {', '.join(f'{q:.2f}' for q in rr)}" if rr else ""))
    return "  |  ".join(parts)


def _machine() -> str:
    """`lscpu | head -20` and `nproc`, as the machine reports them."""
    out = []
    for cmd in ("lscpu | head -20", "nproc"):
        try:
            got = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
            out.append(f"$ {cmd}\n{got.stdout.rstrip()}")
        except (OSError, subprocess.SubprocessError):
            pass
    return "\n".join(out)


def _revision() -> str:
    """seqdsl's commit, and whether its files differ from it ('' outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "seqdsl"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"seqdsl at {head}" + (" with uncommitted changes" if dirty else "") if head else ""


def write_scaling(path: Path, rows, impls, counts, args, loads, peak=None) -> None:
    versions = _versions()
    many = [k for k in counts if k > 1]
    top = max(many, default=None)
    heading = f"## Thread scaling, {THREADS} cores"
    lines = [
        heading,
        "",
        f"Run {datetime.date.today().isoformat()} by `python benchmarks/rnn.py --threads "
        f"{','.join(map(str, counts))}` on {_cpu()} (os.cpu_count() = {THREADS}); "
        + ", ".join([*([_revision()] if _revision() else []),
                     *(f"{k} {v}" for k, v in versions.items())]) + ". "
        f"float32, T = {T}; medians over {args.rounds} alternating rounds of up to "
        f"{args.repeats} timed runs after warm-up, each implementation and thread count in its "
        "own process, started with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and "
        "NUMBA_NUM_THREADS set to the count (and torch.set_num_threads in torch's). "
        "*eff n* is the scaling efficiency t1 / (n · tn) (100% = perfect). "
        + (f"*serial* is the serial fraction implied by the {top}-thread time "
           f"(Karp–Flatt, (t{top}/t1 − 1/{top}) / (1 − 1/{top})"
           + (", on 2 threads 2·t2/t1 − 1" if top == 2 else "")
           + "): 0 = all of it parallel, 1 = none of it; above 1, the "
           f"{top}-thread run was slower than the one-thread run; below 0, noise or cache "
           "effects. " if top and 1 in counts else "")
        + (f"*t{top}/t1 per round* is that ratio in each round (sorted): how steady it was. "
           if top and 1 in counts else "")
        + f"Load average (1/5/15 min) {loads[0]} before, {loads[1]} after"
        + (f", 1-minute peak {peak:.2f} while measuring" if peak is not None else "") + "."
        + (" **Other work shared the machine** (a load average above what one measurement "
           "process explains): the times are noisy, the multi-thread ones most, since a "
           "thread pool waits for its slowest thread and a busy core stalls it; rerun on a "
           "quiet machine before drawing conclusions."
           if peak is not None and peak > max(counts) + 0.5 else ""),
        "",
    ]
    machine = _machine()
    if machine:
        lines += ["<details><summary>Machine</summary>", "", "```", machine, "```", "",
                  "</details>", ""]
    for cell, names in impls.items():
        lines += [f"### {cell}", ""]
        head = ["(B, X, H)", "pass"]
        for n in names:
            head += [f"{n} {k}t ms" for k in counts] + [f"{n} eff {k}" for k in many]
            head += [f"{n} serial", f"{n} t{top}/t1 per round"] if top and 1 in counts else []
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            if r["cell"] != cell:
                continue
            cells = [f"({r['B']}, {r['X']}, {r['H']})", r["mode"]]
            for n in names:
                eff, s, _ = scaling(r["median"], n, counts)
                cells += [_ms(r["median"][(n, k)]) for k in counts]
                cells += [_pct(eff[k]) for k in many]
                if top and 1 in counts:
                    cells += [_frac(s), ", ".join(f"{q:.2f}" for q in round_ratios(r, n, counts))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    # the thread pools each process reported: a check that the counts took
    checks = sorted({f"{n} at {k}: " + ", ".join(f"{lib} {m}" for lib, m in sorted(p.items()))
                     for r in rows for (n, k), p in r["pools"].items() if p})
    if checks:
        lines += ["Thread pools as the processes reported them (threadpoolctl; torch."
                  "get_num_threads; numba.get_num_threads): " + "; ".join(checks) + ".", ""]
    replace_section(path, heading, lines)
    print(f"wrote {path} ({heading})")


def _versions() -> dict:
    versions = {}
    for mod in ("numpy", "numba", "torch", "jax"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    return versions


def _cpu() -> str:
    """The CPU's name, and the kernels OpenBLAS runs on it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu + _blas_kernels()


def _blas_kernels() -> str:
    """Where seqdsl's products run (gemm.py: BLIS's AVX-512 kernels, on one
    thread or split over a run's threads, where preferred), and which of
    OpenBLAS's kernels its other products and NumPy's run: its own choice for
    the CPU, or the one OPENBLAS_CORETYPE forces (torch's MKL and oneDNN ignore it). On an AMD EPYC (Zen 5) forced to Haswell, float32
    GEMM ran at half the speed of OpenBLAS's own choice there (SkylakeX)."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loaded, so threadpoolctl sees it)
        from threadpoolctl import threadpool_info
        cores = sorted({p.get("architecture") or "?" for p in threadpool_info()
                        if p.get("internal_api") == "openblas"})
    except Exception:
        return ""
    if not cores:
        return ""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    try:
        from seqdsl.runtime.numba import gemm
        blis = gemm.preferred()
    except Exception:
        blis = False
    return (" (seqdsl's products on BLIS's Skylake-X kernels, on one thread or, in a run on "
            "several, each large one split over them; its smaller ones, and NumPy's, on "
            if blis else " (") + f"OpenBLAS on its {'/'.join(cores)} kernels" + (
        f", as OPENBLAS_CORETYPE={forced} in the environment asks)" if forced else ")")


def _ms(s):
    return "—" if s is None else f"{s * 1e3:.2f}"


def _line(row, names) -> str:
    med, ours = row["median"], row["median"]["seqdsl"]
    parts = [f"{row['cell']:<13}({row['B']:>3},{row['X']:>5},{row['H']:>5}) {row['mode']:<8}",
             f"seqdsl {_ms(ours)} ms ({ours / row['bound']:.2f}× bound)" if ours else "seqdsl —"]
    for n in names[1:]:
        if med[n] and ours:
            parts.append(f"{n} {_ms(med[n])} ms (seqdsl {med[n] / ours:.2f}× faster)")
    return "  ".join(parts)


def replace_section(path: Path, heading: str, section: list[str]) -> None:
    """RESULTS.md with its section `heading` (the whole line, `## Tagger`)
    replaced where it stands by `section`'s lines, or those added at the
    end; the rest kept as it is."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n\n"
    new = "\n".join(section).rstrip("\n") + "\n"
    found = re.search(f"^{re.escape(heading)}$", text, re.MULTILINE)
    if found is None:
        path.write_text(text.rstrip("\n") + "\n\n" + new, "utf-8")
        return
    end = text.find("\n## ", found.end())
    rest = "\n" + text[end + 1:] if end >= 0 else ""
    path.write_text(text[:found.start()] + new + rest, "utf-8")


def write_results(path, rows, rates, impls) -> None:
    versions, cpu = _versions(), _cpu()
    rate = max(rates.values())
    measured = " and ".join(f"{r / 1e9:.1f} GFLOP/s on {way}" for way, r in rates.items() if r)
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.date.today().isoformat()} by `python benchmarks/rnn.py` on {cpu}, "
        f"{THREADS} threads; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"float32, T = {T}; medians of repeated runs after warm-up, each implementation in "
        f"its own process, alternating. GEMM rate measured here: {measured} (1024² and 2048², "
        f"the better; OpenBLAS on {THREADS} threads, BLIS one product a thread on {THREADS} "
        "at once, as a sharded run makes them). *bound* is the time the matrix products "
        f"alone take at the faster, {rate / 1e9:.1f} GFLOP/s; `× bound` = time / bound. "
        "*speed-up* = their time / seqdsl's time.",
        "",
    ]
    for cell, names in impls.items():
        others = names[1:]
        lines.append(f"## {cell}")
        lines.append("")
        head = "| (B, X, H) | pass | seqdsl ms | × bound | " + " | ".join(
            f"{n} ms | speed-up vs {n}" for n in others) + " |"
        lines.append(head)
        lines.append("|" + "---|" * (4 + 2 * len(others)))
        for r in rows:
            if r["cell"] != cell:
                continue
            ours = r["median"]["seqdsl"]
            cells = [f"({r['B']}, {r['X']}, {r['H']})", r["mode"], _ms(ours),
                     f"{ours / r['bound']:.2f}" if ours else "—"]
            for n in others:
                t = r["median"].get(n)
                cells += [_ms(t), f"{t / ours:.2f}×" if t and ours else "—"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    # The other scripts' sections (## Tagger, ## Thread scaling, ...) stay.
    path = Path(path)
    old = path.read_text("utf-8") if path.exists() else ""
    mine = {f"## {cell}" for cell in impls}
    kept = [part for part in old.split("\n## ")[1:]
            if f"## {part.splitlines()[0].strip()}" not in mine]
    text = "\n".join(lines).rstrip("\n")
    for part in kept:
        text += "\n\n## " + part.rstrip("\n")
    path.write_text(text + "\n", "utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
