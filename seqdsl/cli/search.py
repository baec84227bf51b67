"""`seqdsl search [SPEC ...] --task adding|copy|names|data:FILE --budget N
--out DIR`: mutate seed cells, train each distinct valid mutant for a fixed
budget on Ray, and rank them by validation loss."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import SeqError
from .common import EPILOG, non_negative_int, positive_int, positive_number

INSTALL = "pip install 'seqdsl[search]'  (Ray Tune 2.60)"


def add_parser(sub) -> None:
    s = sub.add_parser(
        "search", help="search for cells: mutate seed cells, train and rank them (on Ray)",
        description="Mutate the seed cells (--cell in SPEC; the shipped GRU and LSTM by "
        "default), train every distinct valid mutant in a one-layer network on --task for the "
        "same budget and seeds, and rank them by validation loss. Trials run on Ray: an "
        "embedded local cluster of --workers CPUs, or the cluster at --address. Writes "
        "DIR/leaderboard.csv and .md as trials finish, and at the end the best cells as "
        "DIR/best/*.seq (each retrains with the `seqdsl train` command in its header), "
        "DIR/best.png and DIR/counts.json (mutants drawn, invalid, duplicates). A killed "
        "search continues with --resume, finished trials kept.", epilog=EPILOG)
    s.add_argument("spec", nargs="*", metavar="SPEC", help=".seq files holding the seed cells "
                   "(default: the shipped gru.seq and lstm.seq)")
    s.add_argument("--cell", action="append", default=[], metavar="NAME",
                   help="a seed cell (repeatable; default: every cell in SPEC)")
    s.add_argument("--task", default="adding", metavar="TASK",
                   help="adding (default), copy, names (character LM on corpus:names, bits per "
                   "character) or data:FILE (your file in the formats of seqdsl train)")
    s.add_argument("--budget", type=positive_int, default=200, metavar="N",
                   help="distinct valid mutants to train (200); the seeds are trained too")
    s.add_argument("--out", metavar="DIR", required=True, help="where the results go")
    s.add_argument("--resume", action="store_true",
                   help="continue the search in --out as it began (its other options are "
                   "read from DIR/search.json)")
    _strategy_args(s.add_argument_group("strategy"))
    _trial_args(s.add_argument_group("each trial"))
    ray_ = s.add_argument_group("Ray")
    ray_.add_argument("--workers", type=positive_int, default=None, metavar="W",
                      help="CPUs of the embedded local cluster (default: one per core)")
    ray_.add_argument("--address", metavar="ADDR", help="run on the Ray cluster at ADDR "
                      "(host:port of `ray start --head`, or auto)")
    s.set_defaults(run=run)


def _strategy_args(g) -> None:
    g.add_argument("--strategy", choices=("random", "evolution"), default="evolution",
                   help="random mutation of the seeds, or regularised evolution (default)")
    g.add_argument("--population", type=positive_int, default=20, metavar="P",
                   help="evolution: the most recent P trials are the population (20)")
    g.add_argument("--sample", type=positive_int, default=5, metavar="S",
                   help="evolution: tournament size (5)")
    g.add_argument("--scheduler", choices=("none", "asha"), default="none",
                   help="asha: stop poor trials early (Ray Tune's ASHA); none (default)")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="the mutations', data's and trials' seed (0)")
    g.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="best cells written as .seq files (5)")


def _trial_args(g) -> None:
    g.add_argument("--steps", type=positive_int, default=200, metavar="N",
                   help="optimiser steps per trial (200)")
    g.add_argument("--seconds", type=positive_number, default=None, metavar="S",
                   help="also stop a trial after S seconds (not reproducible)")
    g.add_argument("--hidden", type=positive_int, default=8, metavar="H",
                   help="the cell's H (8)")
    g.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="(32)")
    g.add_argument("--lr", type=positive_number, default=0.01, help="Adam's rate (0.01)")
    g.add_argument("--backend", choices=("numpy", "numba"), default="numpy",
                   help="numpy (default: tiny trials, nothing to compile) or numba (each new "
                   "cell compiles for seconds first)")
    g.add_argument("--length", type=positive_int, default=None, metavar="N",
                   help="adding: digits per example (30); copy: the gap to recall over (20)")
    g.add_argument("--examples", type=positive_int, default=None, metavar="N",
                   help="adding, copy: examples generated (2000), a tenth held out")


def seed_cells(files: list[str], names: list[str]):
    """The seed cells' syntax trees, each checked as `seqdsl check` would."""
    from ..lang import syntax as S
    from ..lang.parse import parse, read_source
    from ..spec import loads
    if not files:
        from ..lang import library
        files = [str(Path(library.__file__).parent / f) for f in ("gru.seq", "lstm.seq")]
    found = {}
    for path in files:
        source = read_source(path)
        loads(source, path)  # a seed that does not check is reported where it is wrong
        for d in parse(source, path).definitions:
            if isinstance(d, S.CellDef):
                found.setdefault(d.name, d)
    missing = [n for n in names if n not in found]
    if missing:
        raise SeqError(f"--cell {', '.join(missing)}: no such cell in {', '.join(files)}",
                       hint="cells there: " + (", ".join(found) or "none"))
    if not found:
        raise SeqError(f"{', '.join(files)}: no cell to start from")
    return [found[n] for n in names] if names else list(found.values())


def _settings(args) -> dict:
    from ..search.tasks import resolve
    from ..search.trial import Budget
    out = Path(args.out)
    task = resolve(args.task, args.seed, args.length, args.examples, out / "data")
    budget = Budget(steps=args.steps, hidden=args.hidden, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, backend=args.backend, seconds=args.seconds)
    header = (f"Task {args.task} (score: validation loss, {task.unit}); {args.strategy} search, "
              f"seed {args.seed}; each trial {args.steps} steps at H={args.hidden}, batch "
              f"{args.batch_size}, Adam lr {args.lr:g}, backend {args.backend}.")
    return {"task": asdict(task), "budget": asdict(budget), "header": header, "top": args.top,
            "scheduler": args.scheduler, "strategy": args.strategy, "budget_n": args.budget}


def _fits(settings: dict, seed) -> object:
    """The check that a mutant trains in the task's network (sizes bound from
    the task's data, through the first seed's network)."""
    from ..lang.unparse import unparse_cell
    from ..search.tasks import SearchTask, network_source
    from ..search.trial import Budget, NetworkFit
    task, budget = SearchTask(**settings["task"]), Budget(**settings["budget"])
    source = unparse_cell(seed) + "\n" + network_source(seed.name, budget.hidden, task.per_step)
    return NetworkFit(task, budget, source)


def _need_ray():
    try:
        from ..search import ray_search
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "ray":
            raise SeqError("seqdsl search runs its trials on Ray, which is not installed",
                           hint=INSTALL) from None
        raise
    return ray_search


def run(args) -> int:
    ray_search = _need_ray()
    from ..search.strategy import Generator
    from ..search.tasks import SearchTask
    from ..search.trial import Budget
    out = Path(args.out)
    saved = out / "search.json"
    if args.resume:
        if not saved.exists() or not (out / "tune").exists():
            raise SeqError(f"--resume: {out} holds no search to continue",
                           hint=f"start one with seqdsl search ... --out {out}")
        settings = json.loads(saved.read_text("utf-8"))
        generator = None
    else:
        if saved.exists():
            raise SeqError(f"{out} already holds a search",
                           hint=f"continue it with --resume --out {out}, or give another --out")
        seeds = seed_cells(args.spec, args.cell)
        out.mkdir(parents=True, exist_ok=True)
        settings = _settings(args)
        # Evolution's candidate i uses the results of trials up to i - (trials
        # at once), so the generator needs the cluster's size.
        ray_search.connect(args.address, args.workers)
        generator = Generator(seeds, args.strategy, args.budget, args.seed,
                              ray_search.cluster_cpus(), args.population, args.sample,
                              _fits(settings, seeds[0]))
        saved.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", "utf-8")
        print(f"searching from {', '.join(c.name for c in seeds)}: {args.budget} mutants on "
              f"{args.task}; results in {out}", flush=True)
    task, budget = SearchTask(**settings["task"]), Budget(**settings["budget"])
    started = time.perf_counter()
    rows = ray_search.run(out, generator, task, budget, header=settings["header"],
                          scheduler=settings["scheduler"], address=args.address,
                          workers=args.workers, resume=args.resume)
    best, plot = ray_search.finish(out, rows, task, budget, settings["top"], settings["header"])
    _summary(out, rows, best, time.perf_counter() - started)
    return 0


def _summary(out: Path, rows, best, seconds: float) -> None:
    counts_file = out / "counts.json"
    counts = json.loads(counts_file.read_text("utf-8")) if counts_file.exists() else {}
    done = sum(r["status"] == "done" for r in rows)
    print(f"{len(rows)} trials ({done} trained to the end) in {seconds:.0f}s; mutants drawn "
          f"{counts.get('attempts', 0)}: {counts.get('suggested', 0)} distinct valid, "
          f"{counts.get('duplicates', 0)} duplicates, {counts.get('invalid', 0)} invalid")
    if rows:
        print(f"best: {rows[0]['cell']} {rows[0]['score']:.4f}; leaderboard {out}/leaderboard.md, "
              f"plot {out}/best.png, best cells {out}/best/ ({len(best)})")
