"""One trial of a search: a candidate cell trained in the task's network for
a fixed budget with fixed seeds, scored by its validation loss.

A trial is `seqdsl train` without the files: the same task building, split,
initial parameters, batches and `Trainer` (`seqdsl.train`), so the command
`retrain_command` prints trains the same network the same way.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import SeqError
from ..ir.graph import Var
from ..train.data import split_valid
from ..train.fit import Config, Diverged, Trainer, evaluate
from ..train.tasks import build_task, examples, infer_task, network_sizes
from .tasks import SearchTask

NETWORK = "Search"
VALID_FRACTION = 0.1


@dataclass(frozen=True)
class Budget:
    """What every trial of a search trains with; the same for all, so that
    scores compare."""

    steps: int = 200
    hidden: int = 8
    batch_size: int = 32
    lr: float = 0.01
    clip_norm: float = 5.0  # mutants blow up more often than the cells they come from
    seed: int = 0
    backend: str = "numpy"
    seconds: float | None = None  # a wall-clock cap as well (not reproducible)


@dataclass
class TrialResult:
    score: float  # the validation loss in the task's unit; inf when training diverged
    status: str  # "done", "diverged" or "invalid"
    parameters: int
    steps: int
    seconds: float
    message: str = ""


def prepare(source: str, task: SearchTask, budget: Budget):
    """The network of `source` instantiated for `task`, with its initial
    parameters and the train and validation examples."""
    from ..spec import instantiate, loads
    nt = loads(source, "<candidate>").network(NETWORK)
    kind = infer_task(nt, task.data, task.kind)
    t = build_task(nt, kind, task.data)
    everything = examples(t, nt, task.data)
    tr, va = split_valid(len(everything), VALID_FRACTION, budget.seed)
    net = instantiate(nt, sizes=network_sizes(nt, t), dtype=np.float32,
                      backend=budget.backend)
    # A trial's few hundred small steps would save less than compiling its
    # network's step as one function costs (~1.5 s for each new cell).
    net.fused = False
    return net, net.init_params(budget.seed), [everything[i] for i in tr], \
        [everything[i] for i in va]


class NetworkFit:
    """Whether a checked cell trains in the task's network: it must bind the
    network's sizes (a mutant may tie its input's size to H) and run a step
    (a mutant whose state no longer reads its input cannot). Picklable, so
    that Tune saves it with the searcher. Returns None, or why not."""

    def __init__(self, task: SearchTask, budget: Budget, seed_source: str):
        from ..spec import loads
        nt = loads(seed_source, "<seed>").network(NETWORK)
        t = build_task(nt, infer_task(nt, task.data, task.kind), task.data)
        self.sizes = network_sizes(nt, t)
        self.per_step, self.hidden = task.per_step, budget.hidden

    def __call__(self, cell_source: str, name: str) -> str | None:
        from ..spec import instantiate, loads
        from .explore import reason
        from .tasks import network_source
        source = cell_source + "\n" + network_source(name, self.hidden, self.per_step)
        try:
            spec = loads(source, "<candidate>")
            if not reads_its_input(spec.cell(name)):
                return "network: its state never reads the input"
            net = instantiate(spec.network(NETWORK), sizes=self.sizes,
                              dtype=np.float32, backend="numpy")
            x = np.zeros((2, 1), np.int64)
            net.forward(net.init_params(0), {"x": x}, {"x": np.array([2])})
        except SeqError as e:
            return "network: " + reason(e)
        except Exception as e:  # the runtime fails on it: count it, and go on searching
            return f"network: the step fails ({type(e).__name__})"
        return None


def reads_its_input(ct) -> bool:
    """Whether any equation of the cell's step reads one of its inputs."""
    inputs = {n for n, _ in ct.inputs}
    return any(isinstance(a, Var) and a.name in inputs for e in ct.graph.eqns for a in e.args)


def train_candidate(source: str, task: SearchTask, budget: Budget, report=None) -> TrialResult:
    """Train network `Search` of `source` on `task` for `budget`; `report`
    (if given) is called with (step, score, parameters) after every epoch, so a
    scheduler can stop a poor trial early (it raises to stop it)."""
    started = time.perf_counter()
    try:
        net, params, train, valid = prepare(source, task, budget)
    except SeqError as e:
        return TrialResult(math.inf, "invalid", 0, 0, time.perf_counter() - started, e.message)
    size = int(sum(np.prod(s) for s in net.param_shapes.values()))
    # As many epochs as steps: never fewer than the budget needs, and a
    # number `seqdsl train --epochs` can be given.
    config = Config(epochs=budget.steps, batch_size=budget.batch_size,
                    lr=budget.lr, clip_norm=budget.clip_norm, seed=budget.seed,
                    max_steps=budget.steps,
                    max_minutes=budget.seconds / 60 if budget.seconds else None)
    trainer = None

    def echo(_line: str) -> None:  # Trainer says an epoch ended: its row is the last
        row = trainer.pos.history[-1]
        if report is not None and "valid_loss" in row:
            report(row["step"], task.score(row["valid_loss"]), size)

    trainer = Trainer(net, params, train, valid, config, None, None, False, echo)
    try:
        trainer.run()
    except Diverged as e:
        return TrialResult(math.inf, "diverged", size, trainer.pos.step,
                           time.perf_counter() - started, e.message)
    except (ArithmeticError, LookupError, ValueError) as e:  # the runtime's failure, not
        # the search's: the trial is recorded as an error and the search goes on
        return TrialResult(math.inf, "error", size, trainer.pos.step,
                           time.perf_counter() - started, f"{type(e).__name__}: {e}")
    history = trainer.pos.history
    if history and history[-1]["step"] == trainer.pos.step and "valid_loss" in history[-1]:
        loss = history[-1]["valid_loss"]
    else:  # stopped mid-epoch by the budget: validate where it stopped
        loss = evaluate(net, trainer.params, valid, budget.batch_size)["loss"]
    score = task.score(loss) if math.isfinite(loss) else math.inf
    return TrialResult(score, "done" if math.isfinite(score) else "diverged", size,
                       trainer.pos.step, time.perf_counter() - started)


def retrain_command(seq_file: str, task: SearchTask, budget: Budget, out: str) -> str:
    """The `seqdsl train` command that retrains a candidate as its trial did."""
    return (f"seqdsl train {seq_file} --network {NETWORK} --data {task.data} "
            f"--task {task.kind} --hidden {budget.hidden} --batch-size {budget.batch_size} "
            f"--lr {budget.lr:g} --clip-norm {budget.clip_norm:g} --seed {budget.seed} "
            f"--epochs {budget.steps} --max-steps {budget.steps} --backend {budget.backend} --out {out}")
