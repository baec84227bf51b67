"""seqdsl against PyTorch (and JAX, if installed), side by side in one run.

    python benchmarks/rnn.py [--quick] [--repeats N] [--out benchmarks/RESULTS.md]

Times LSTM (seqdsl vs torch.nn.LSTM) and the peephole LSTM (seqdsl vs a
PyTorch eager loop), both also against JAX's lax.scan under jit, forward and
forward+backward, float32, T=100, for each (B, X, H). Every measurement runs
in its own subprocess, the implementations alternating, and reports the
median of repeated runs after warm-up: two BLAS/OpenMP thread pools in one
process slow each other down, and the machine drifts. It also measures the
machine's GEMM rate and prints each time as a multiple of the GEMM-FLOP lower
bound (the time the step's matrix products alone would take at that rate).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1, 32, 64), (32, 64, 128), (32, 256, 256), (64, 512, 512), (32, 1024, 1024)]
T = 100
THREADS = os.cpu_count() or 1

# ---- workers: each runs in a fresh process and prints one JSON line -----------------


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


def work_seqdsl(cell: str, B: int, X: int, H: int, mode: str, repeats: int) -> list[float]:
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


def work_torch(cell: str, B: int, X: int, H: int, mode: str, repeats: int) -> list[float]:
    import torch
    torch.set_num_threads(THREADS)
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


def work_jax(cell: str, B: int, X: int, H: int, mode: str, repeats: int) -> list[float]:
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


def work_gemm(n: int, repeats: int) -> float:
    """The machine's float32 GEMM rate (FLOP/s) through NumPy's BLAS."""
    import numpy as np
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    times = _timeit(lambda: a @ b, repeats)
    return 2 * n ** 3 / statistics.median(times)


WORKERS = {"seqdsl": work_seqdsl, "torch": work_torch, "jax": work_jax}

# ---- driver --------------------------------------------------------------------------


def _in_subprocess(args: dict, timeout: float = 900) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec["impl"] == "gemm":
            print(json.dumps({"rate": work_gemm(spec["n"], spec["repeats"])}))
        else:
            fn = WORKERS[spec["impl"]]
            times = fn(spec["cell"], spec["B"], spec["X"], spec["H"], spec["mode"], spec["repeats"])
            print(json.dumps({"times": times}))
        return

    shapes = SHAPES[:3] if args.quick else SHAPES
    impls = {"LSTM": ["seqdsl", "torch"], "PeepholeLSTM": ["seqdsl", "torch"]}
    if has("jax"):
        for names in impls.values():
            names.append("jax")
    print(f"threads: {THREADS}; measuring the GEMM rate ...", flush=True)
    rate = max(_in_subprocess({"impl": "gemm", "n": n, "repeats": 9})["rate"]
               for n in (1024, 2048))
    print(f"GEMM: {rate / 1e9:.1f} GFLOP/s (float32)", flush=True)
    rows = []
    for cell, names in impls.items():
        for (B, X, H) in shapes:
            for mode in ("fwd", "fwd+bwd"):
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
    write_results(args.out, rows, rate, impls)


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
    """RESULTS.md with its section `heading` (`## Tagger`) replaced by
    `section`'s lines, or those added at the end; the rest kept as it is."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section), "utf-8")


def write_results(path, rows, rate, impls) -> None:
    versions = {}
    for mod in ("numpy", "numba", "torch", "jax"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.date.today().isoformat()} by `python benchmarks/rnn.py` on {cpu}, "
        f"{THREADS} threads; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"float32, T = {T}; medians of repeated runs after warm-up, each implementation in "
        "its own process, alternating. GEMM rate measured here: "
        f"{rate / 1e9:.1f} GFLOP/s. *bound* is the time the matrix products alone take at "
        "that rate; `× bound` = time / bound. *speed-up* = their time / seqdsl's time.",
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
    Path(path).write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
