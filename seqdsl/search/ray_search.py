"""A search run on Ray Tune: the generator's candidates as a Tune `Searcher`
(so that Tune saves and restores its state with the experiment, and
`--resume` picks up where a killed search stopped), one Tune trial per
candidate, ASHA to stop poor trials early, and a callback that streams the
leaderboard as trials finish.

Ray is an optional extra (`pip install 'seqdsl[search]'`); this module is
imported only when a search runs.
"""
from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import asdict
from pathlib import Path

# Save the experiment's state (trials and the searcher) at every step of
# Tune's loop, not every few seconds: a killed search must not retrain a
# trial that had finished. Set before Tune reads it.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune import Callback  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from . import leaderboard as L  # noqa: E402
from . import saved_state  # noqa: E402
from .strategy import Generator  # noqa: E402
from .tasks import SearchTask, network_source  # noqa: E402
from .trial import Budget, retrain_command, train_candidate  # noqa: E402

WORST = 1e9  # Tune's metric for a trial that diverged (JSON has no infinity)
BACKUP = "tune-saved"  # beside tune/: the last whole copy of its state


def trainable(config: dict) -> None:
    """One Tune trial: train the candidate, reporting after every epoch."""
    task, budget = SearchTask(**config["task"]).here(), Budget(**config["budget"])
    node = ray.get_runtime_context().get_node_id()

    def report(step: int, score: float, parameters: int) -> None:
        tune.report({"score": score if math.isfinite(score) else WORST, "step": step,
                     "final": False, "node": node, "parameters": parameters})

    r = train_candidate(config["source"], task, budget, report)
    tune.report({"score": r.score if math.isfinite(r.score) else WORST, "step": r.steps,
                 "final": True, "status": r.status, "parameters": r.parameters,
                 "trial_seconds": r.seconds, "node": node, "finished_at": time.time(),
                 "message": r.message})


class CellSearcher(Searcher):
    """Tune's view of a `Generator`: a config per candidate, results back."""

    def __init__(self, generator: Generator, task: SearchTask, budget: Budget, out: str):
        super().__init__(metric="score", mode="min")
        self.generator, self.out = generator, out
        self.common = {"task": asdict(task), "budget": asdict(budget)}
        self.trial_index: dict[str, int] = {}

    def suggest(self, trial_id: str):
        c = self.generator.suggest()
        if c == "finished":
            return Searcher.FINISHED
        if c is None:  # evolution waits for older trials' results
            return None
        self.trial_index[trial_id] = c.index
        source = c.source + "\n" + network_source(c.name, self.common["budget"]["hidden"],
                                                  self.common["task"]["per_step"])
        return {"index": c.index, "cell": c.name, "source": source, "history": c.history,
                "parent": c.parent, **self.common}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        index = self.trial_index.get(trial_id)
        if index is None:
            return
        score = result.get("score", WORST) if result and not error else WORST
        self.generator.complete(index, score if score < WORST else math.inf)
        L.write_counts(Path(self.out), self.generator.counts.to_json())

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump((self.generator, self.trial_index, self.common, self.out), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.generator, self.trial_index, self.common, self.out = pickle.load(f)


def row_of(config: dict, result: dict | None, trial_id: str, error: bool = False) -> dict:
    """A leaderboard row from a trial's config and its last result."""
    result = result or {}
    final = result.get("final", False)
    score = result.get("score", WORST)
    status = result.get("status", "done") if final else "stopped early"
    if error or not result:  # the trial raised (Tune has its traceback in tune/)
        status, score = "error", WORST
    return {"score": score if score < WORST else math.inf, "status": status,
            "parameters": result.get("parameters", 0),
            "trial_seconds": result.get("trial_seconds", result.get("time_total_s", 0.0)),
            "steps": result.get("step", 0), "index": config["index"], "cell": config["cell"],
            "parent": "" if config["parent"] is None else config["parent"],
            "node": result.get("node", ""), "trial_id": trial_id,
            "finished_at": f"{result.get('finished_at', 0.0):.6f}",
            "history": tuple(config["history"]), "source": config["source"],
            "message": result.get("message", "")}


class StateBackup(Callback):
    """Keeps a copy of Tune's saved state after every step in which a trial
    changed status (saved_state.py: a kill during Tune's own copy must not
    lose the search)."""

    def __init__(self, backup: str):
        self.backup = backup
        self._statuses = None

    def on_step_end(self, iteration, trials, **info) -> None:
        statuses = tuple((t.trial_id, t.status) for t in trials)
        if trials and statuses != self._statuses:
            self._statuses = statuses
            saved_state.snapshot(Path(trials[0].storage.experiment_driver_staging_path),
                                 Path(self.backup))


class LeaderboardWriter(Callback):
    """Rewrites leaderboard.csv and .md whenever a trial finishes, and says so."""

    def __init__(self, out: str, header: str, total: int):
        self.out, self.header, self.total = out, header, total

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write(trials, trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write(trials, trial)

    def _write(self, trials, trial) -> None:
        rows = L.ranked([row_of(t.config, t.last_result, t.trial_id, t.status == "ERROR")
                         for t in trials if t is trial or t.status in ("TERMINATED", "ERROR")])
        out = Path(self.out)
        L.write_csv(out, rows)
        counts = out / "counts.json"
        L.write_markdown(out, rows, self.header, _json(counts))
        mine = next(r for r in rows if r["trial_id"] == trial.trial_id)
        best = rows[0]
        print(f"[{len(rows)}/{self.total}] {mine['cell']}: {mine['score']:.4f} "
              f"({mine['status']}, {mine['trial_seconds']:.1f}s); best {best['score']:.4f} "
              f"{best['cell']}", flush=True)


def _json(path: Path):
    import json
    return json.loads(path.read_text("utf-8")) if path.exists() else None


def connect(address: str | None, workers: int | None) -> None:
    """An embedded local cluster of `workers` CPUs, or the cluster at `address`."""
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False,
             "configure_logging": True, "logging_level": "warning"}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), **quiet)


def cluster_cpus() -> int:
    """The CPUs of the cluster connected to: the trials that run at once."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def tune_config(searcher: CellSearcher, total: int, scheduler: str, budget: Budget):
    sched = None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        sched = ASHAScheduler(time_attr="step", max_t=budget.steps,
                              grace_period=max(1, budget.steps // 8), reduction_factor=3)
    return tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=total,
                           metric="score", mode="min", reuse_actors=True,
                           trial_dirname_creator=trial_folder)


def trial_folder(trial) -> str:
    """`trial-00017-GRU_17`: Tune's default name spells out the whole config."""
    return f"trial-{trial.config['index']:05d}-{trial.config['cell']}"


def run(out: Path, generator: Generator | None, task: SearchTask, budget: Budget, *,
        header: str, scheduler: str = "none", address: str | None = None,
        workers: int | None = None, resume: bool = False):
    """Run (or with `resume`, continue) the search whose Tune experiment is
    in `out/tune`; returns the final leaderboard rows."""
    connect(address, workers)
    # Tune keeps one trial pending for a custom searcher: on a cluster the
    # trials would all land on the first node's actor, reused while the
    # others start. One pending per CPU lets every node start its own.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(cluster_cpus())
    path = (out / "tune").resolve()
    trainable_ = tune.with_resources(trainable, {"cpu": 1})
    if resume:
        saved_at = saved_state.repair(path, out.resolve() / BACKUP)
        if saved_at is not None:
            print(f"the search's saved state was cut short by the kill; resuming from the "
                  f"copy saved at {time.strftime('%H:%M:%S', time.localtime(saved_at))}",
                  flush=True)
        tuner = tune.Tuner.restore(str(path), trainable_, resume_unfinished=True,
                                   resume_errored=True)
    else:
        searcher = CellSearcher(generator, task, budget, str(out.resolve()))
        run_config = tune.RunConfig(
            name="tune", storage_path=str(out.resolve()), verbose=0,
            callbacks=[LeaderboardWriter(str(out.resolve()), header, generator.total),
                       StateBackup(str(out.resolve() / BACKUP))])
        tuner = tune.Tuner(trainable_, tune_config=tune_config(
            searcher, generator.total, scheduler, budget), run_config=run_config)
    grid = tuner.fit()
    rows = [row_of(r.config, r.metrics, (r.metrics or {}).get("trial_id", ""),
                   r.error is not None) for r in grid if r.config]
    return L.ranked(rows)


def finish(out: Path, rows: list[dict], task: SearchTask, budget: Budget, k: int,
           header: str) -> tuple[list[Path], Path | None]:
    """The final leaderboard, best cells and plot, from every trial's result."""
    L.write_csv(out, rows)
    L.write_markdown(out, rows, header, _json(out / "counts.json"))
    sources = {r["index"]: r["source"] for r in rows}
    best = L.write_best(out, rows, sources, k, lambda p: retrain_command(
        str(p), task, budget, str(out / "retrain" / p.stem)))
    plot = L.write_plot(out, rows, task.unit) if rows else None
    return best, plot
