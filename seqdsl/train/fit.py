"""The training loop: batches, loss and gradients, clipping, an optimiser
step; validation, checkpoints and the loss curve.

A run is a pure function of its seed: the validation split, the initial
parameters and every epoch's batches (`data.batch_order(.., seed, epoch)`)
follow from it, so a checkpoint that records the epoch and the batch within
it lets `resume` continue exactly where the run stopped.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SeqError
from ..runtime.network import Network
from ..runtime.validate import valid_steps
from . import curve
from .checkpoint import Checkpoint, copy_checkpoint, save_checkpoint
from .data import Batch, Example, batch_order, collate
from .optim import clip_by_global_norm, clip_by_value, global_norm, make_optimizer


@dataclass
class Config:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.005
    optimizer: str = "adam"
    clip_norm: float | None = None  # the global norm of all gradients, at most
    clip_value: float | None = None  # each gradient entry within ±clip_value
    seed: int = 0
    max_minutes: float | None = None  # of this call's training, then save and stop
    max_steps: int | None = None  # optimiser steps in all, then save and stop
    checkpoint_minutes: float = 1.0  # between checkpoints within an epoch

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SeqError(f"{name}: expected a positive whole number, "
                               f"given {getattr(self, name)}")
        for name in ("lr", "clip_norm", "clip_value", "max_minutes"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise SeqError(f"{name}: expected a positive number, given {v}")


@dataclass
class Position:
    """Where a run stands; every checkpoint records it."""

    epoch: int = 0  # the epoch under way (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimiser steps taken
    losses: list[float] = field(default_factory=list)  # every step's training loss
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    best: float | None = None  # the best checkpoint's validation (or training) loss


@dataclass
class FitResult:
    params: dict[str, np.ndarray]
    position: Position
    stopped: str  # "done", "max-minutes", "max-steps" or "interrupted"


class Diverged(SeqError):
    """A non-finite loss or gradient: the run stops, its last checkpoint kept."""


def network_batch(net: Network, batch: Batch) -> tuple[dict, dict]:
    """The network's inputs for a batch of token ids: ids for a tokens
    input, one-hot vectors (zero past each length) for a vector input."""
    inputs = {}
    for name, (kind, size) in net.inputs.items():
        ids = batch.inputs[name]
        if kind == "tokens":
            inputs[name] = ids
        else:
            valid = valid_steps(ids.shape[0], batch.lengths[name])
            inputs[name] = np.eye(size, dtype=net.dtype)[ids] * valid[..., None]
    return inputs, batch.lengths


def evaluate(net: Network, params, examples: list[Example], batch_size: int) -> dict:
    """Mean loss per labelled target and accuracy (argmax) over `examples`."""
    total = correct = count = 0.0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples, np.arange(i, min(i + batch_size, len(examples))))
        inputs, lengths = network_batch(net, batch)
        result = net.forward(params, inputs, lengths)  # one run: outputs and loss
        loss = net.loss(result, batch.targets, reduction="sum")
        (out,) = result.heads.values()
        labelled = batch.targets >= 0
        correct += float((out.argmax(-1) == batch.targets)[labelled].sum())
        total += loss
        count += batch.tokens
    return {"loss": total / count if count else math.nan,
            "accuracy": correct / count if count else math.nan}


class Trainer:
    """One run of `fit`: its state, checkpoints and reports."""

    def __init__(self, net, params, train, valid, config: Config, out, meta, progress, echo):
        config.check()
        self.net, self.params, self.train, self.valid = net, params, train, valid
        self.config, self.meta, self.progress, self.echo = config, meta or {}, progress, echo
        self.out = Path(out) if out is not None else None
        self.opt = make_optimizer(config.optimizer, config.lr)
        self.pos = Position()
        self.lengths = np.array([len(e.target) if e.target.ndim else
                                 max(len(v) for v in e.inputs.values()) for e in train])
        self.started = time.monotonic()
        self.warm = False  # whether a step has run (and compiled what it needs)
        self.saved_at = self.started

    def restore(self, ck: Checkpoint) -> None:
        self.params.update((n, ck.params[n].astype(self.net.dtype)) for n in self.params)
        self.opt.load_state(ck.optimizer_arrays, ck.meta["optimizer"])
        self.pos = Position(**ck.meta["position"])

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> str:
        with self.net.blas_policy(), _interrupt_flag() as interrupted:
            while self.pos.epoch < self.config.epochs:
                order = batch_order(self.lengths, self.config.batch_size, self.config.seed,
                                    self.pos.epoch)
                stop = self._epoch(order, interrupted)
                if stop:
                    self.save()
                    return stop
                self._end_epoch()
        return "done"

    def _epoch(self, order, interrupted) -> str | None:
        bar = _bar(self.progress, len(order), self.pos.batch,
                   f"epoch {self.pos.epoch + 1}/{self.config.epochs}")
        tokens, t0 = 0, time.perf_counter()
        try:
            while self.pos.batch < len(order):
                batch = collate(self.train, order[self.pos.batch])
                loss = self._step(batch)
                tokens += batch.tokens
                if not self.warm:  # the first step compiles: its time is not throughput
                    self.warm, tokens, t0 = True, 0, time.perf_counter()
                if bar is not None:  # drawn at tqdm's own pace, not every step (20 us each)
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False,
                                    tok_s=f"{tokens / (time.perf_counter() - t0):,.0f}")
                    bar.update(1)
                stop = self._should_stop(interrupted)
                if stop:
                    return stop
                if time.monotonic() - self.saved_at > 60 * self.config.checkpoint_minutes:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        self.tokens_per_second = tokens / max(time.perf_counter() - t0, 1e-9) if tokens else 0.0
        return None

    def _step(self, batch: Batch) -> float:
        inputs, lengths = network_batch(self.net, batch)
        # Overflow is looked for below, and reported as one message, not warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            loss, grads = self.net.loss_and_grad(self.params, inputs, lengths, batch.targets)
            norm = global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self._diverged(loss, norm)
        if self.config.clip_norm is not None:
            clip_by_global_norm(grads, self.config.clip_norm, norm)
        if self.config.clip_value is not None:
            clip_by_value(grads, self.config.clip_value)
        self.opt.step(self.params, grads)
        self.pos.step += 1
        self.pos.batch += 1
        self.pos.losses.append(float(loss))
        return float(loss)

    def _diverged(self, loss: float, norm: float) -> None:
        what = "the loss" if not math.isfinite(loss) else "the gradient's norm"
        value = loss if not math.isfinite(loss) else norm
        kept = ""
        if self.out is not None and (self.out / "last.json").exists():
            kept = f"; the last good checkpoint, {self.out / 'last.json'}, is kept"
        raise Diverged(f"epoch {self.pos.epoch + 1}, step {self.pos.step + 1}: {what} is "
                       f"{value} (gradients exploded){kept}",
                       hint="clip the gradients (--clip-norm 5) or lower the learning rate "
                            f"(--lr {self.config.lr / 10:g})")

    def _should_stop(self, interrupted) -> str | None:
        if interrupted.is_set():
            return "interrupted"
        if self.config.max_steps is not None and self.pos.step >= self.config.max_steps:
            return "max-steps"
        if (self.config.max_minutes is not None
                and time.monotonic() - self.started > 60 * self.config.max_minutes):
            return "max-minutes"
        return None

    def _end_epoch(self) -> None:
        n = self.pos.epoch
        first = self.pos.step - self.pos.batch  # the epoch's first step
        row = {"epoch": n + 1, "step": self.pos.step,
               "train_loss": float(np.mean(self.pos.losses[first:] or [math.nan])),
               "tokens_per_second": getattr(self, "tokens_per_second", math.nan)}
        if self.valid:
            scores = evaluate(self.net, self.params, self.valid, self.config.batch_size)
            row.update(valid_loss=scores["loss"], valid_accuracy=scores["accuracy"],
                       perplexity=math.exp(min(scores["loss"], 700)))
        self.pos.history.append(row)
        self.pos.epoch, self.pos.batch = n + 1, 0
        self.echo(_epoch_line(row, self.config.epochs))
        score = row.get("valid_loss", row["train_loss"])
        better = self.pos.best is None or score < self.pos.best
        if better:
            self.pos.best = score
        self.save()
        if better and self.out is not None:
            copy_checkpoint(self.out, "last", "best")

    # ---- saving ------------------------------------------------------------------------

    def save(self) -> None:
        self.saved_at = time.monotonic()
        if self.out is None:
            return
        arrays, opt_meta = self.opt.state()
        meta = {**self.meta, "config": asdict(self.config), "optimizer": opt_meta,
                "position": asdict(self.pos), "dtype": self.net.dtype.name}
        save_checkpoint(self.out, "last", self.params, arrays, meta)
        curve.write(self.out, self.pos.losses, self.pos.history)


def fit(net: Network, params: dict, train: list[Example], valid: list[Example] | None = None,
        config: Config | None = None, out=None, meta: dict | None = None,
        resume: Checkpoint | None = None, progress: bool = True, echo=print) -> FitResult:
    """Train `params` (updated in place) on `train`, validating on `valid`
    after each epoch. With `out`, checkpoints `last` (every epoch, every
    `checkpoint_minutes`, and on stopping) and `best`, and the loss curve
    (`loss.csv`, `loss.png`) are written there; `resume` continues the run
    a checkpoint of it recorded. Ctrl-C stops after the step under way and
    saves; a non-finite loss or gradient raises `Diverged`."""
    if not train:
        raise SeqError("no training examples", hint="a data file with at least one example")
    trainer = Trainer(net, params, train, valid or [], config or Config(), out, meta, progress,
                      echo)
    if resume is not None:
        trainer.restore(resume)
    stopped = trainer.run()
    return FitResult(trainer.params, trainer.pos, stopped)


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4g}"]
    if "valid_loss" in row:
        parts.append(f"valid loss {row['valid_loss']:.4g} (perplexity {row['perplexity']:.4g}, "
                     f"accuracy {100 * row['valid_accuracy']:.1f}%)")
    if row["tokens_per_second"] > 0:  # none when a resumed run had only the epoch's end left
        parts.append(f"{row['tokens_per_second']:,.0f} tokens/s")
    return ", ".join(parts)


def _bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True)


@contextmanager
def _interrupt_flag():
    """A flag Ctrl-C sets, so the run stops between steps (a second Ctrl-C
    interrupts at once). Only the main thread may catch signals."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
