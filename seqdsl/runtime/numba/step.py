"""A network's training step as one compiled function (emit_step.py), for
networks whose every piece runs as generated code: cell layers (alone,
stacked or bidirectional, or starting from another layer's final states)
reading token ids through lookups or vectors, and heads over layer outputs
or vector inputs whose loss rows the generator writes.

Python keeps what it does best and is cheap: the checks of every argument
(the same functions as the layer-by-layer path), the heads' labelled rows
and dense targets, the kernels' BLAS threads. Everything between runs in
the compiled function: the CharLM's step spent a sixth to a fifth of its
time in Python between the kernels before (benchmarks/RESULTS.md).

A batch the cells' plan splits into shards of rows (shards.py) runs as
shards here too, each the whole step with one BLAS thread (batch rows never
meet in a network), their loss terms and gradients summed, the heads
sharded as well. Where Numba's threads hand off fast (OpenMP, TBB), all
shards run in one parallel loop (emit_shards.py), and a step shards from
16 rows a shard, whatever its work: the CharLM's step with Adam took
0.83–0.91× the time of its batches of 32 run whole (two runs of
benchmarks/step_shards.py; a whole batch's time on BLAS's two threads
varies by process, the shards' less). Elsewhere each shard is handed to a
Python thread, only where the cells' plan has work enough to pay for that.

What it does not cover (token ids read as one-hot vectors or by a head,
several layers starting from one layer's states, cells whose plans differ)
runs layer by layer as before. Unsharded, the results are the same either
way to the bit; in shards, to the rounding of the sums
(tests/test_fused_step.py).
"""
from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from ..layers import Bidirectional, CellLayer, Stack
from .blas import blas_threads
from .call import address_of
from .compile import cache_key, load_module
from .emit_shards import generate_shards
from .emit_step import generate_step
from .step_plan import BiPart, CellPart, Columns, HeadPart, Kernel, Lookup, StepPlan
from .runtime import _reuse_freed_memory
from .shards import (RunPlan, parallel_loops_hand_off_fast, run_each, shard_rows,
                     sum_into_first)


class Unfused(Exception):
    """The network has a piece the compiled step does not cover (the message
    says which); it runs layer by layer."""


def fused_step(net, losses: tuple[str, ...]):
    """The compiled step of `net` with these losses per head, or None where
    the network has a piece it does not cover."""
    try:
        return FusedStep(net, losses)
    except Unfused:
        return None


class FusedStep:
    def __init__(self, net, losses: tuple[str, ...]):
        self.net = net
        layers = [part for name, layer in net.layers.items()
                  for part in _parts(net, layer, net.type.reads[name], name)]
        self.plan = StepPlan(
            network=net.type.name,
            inputs=[(n, "tokens" if kind == "tokens" else "vectors")
                    for n, (kind, _) in net.inputs.items()],
            lengths_of=_lengths_of(net, layers),
            params={n: _dims(n, s) for n, s in net.param_shapes.items()},
            layers=layers,
            heads=[_head_part(net, h, loss) for h, loss in zip(net.heads, losses)])
        _check_inits(self.plan)
        by_prefix = {c.prefix: c for layer in net.layers.values() for _, c in layer.cells()}
        self.cells = [(by_prefix[part.prefix], part) for part in self.plan.cells()]
        gen = generate_step(self.plan, net.dtype.name)
        self.source = gen.source
        key = cache_key("network step", net.dtype.name, gen.source)
        self.signature = gen.signature
        self.loaded = load_module(gen.source, key, {"loss_and_grad": gen.signature})
        self.sharded = None  # the step in shards, compiled when a batch first shards
        self.addresses = [address_of(getattr(_module(k), k.function), k.signature)
                          for k in self.plan.kernels()]

    def __call__(self, p, xs, ls, per_head: dict, reduction: str):
        """(loss, gradients), or None when this batch must run layer by layer
        (an empty one, or one whose cells' plans differ)."""
        net = self.net
        shape = {n: xs[n].shape[:2] for n in xs}
        in_one_loop = self._in_one_loop()
        plan = self._plan(shape, in_one_loop)
        if plan is None:
            return None
        rows, weights = [], []
        for h in net.heads:
            root = self.plan.lengths_of[h.reads[0]]
            t, b, dense, weight, _ = h.labelled(
                ls[root], *shape[root], *(per_head[k][h.name] for k in ("targets", "mask", "loss")),
                reduction)
            rows.append((t, b, dense, weight))
            weights.append(weight)
        _reuse_freed_memory()
        B = next(iter(shape.values()))[1]
        if plan.shards == 1:
            with blas_threads(plan.blas_threads):
                outs = [self._run(list(xs.values()), list(ls.values()), p, rows)]
        else:
            self._keep_unsharded_runs_on_one_blas_thread()
            with blas_threads(1):
                if in_one_loop:
                    return self._run_in_shards(B, plan.shards, xs, ls, p, rows, weights)
                # every shard's arrays made first: a thread waiting for the
                # GIL while another holds it can wait for a scheduler tick
                shards = [(*_shard(xs, ls, r), p, _rows_of(rows, r))
                          for r in shard_rows(B, plan.shards)]
                outs = run_each(lambda args: self._run(*args), shards)
        total = 0.0
        for out in outs:
            for terms, weight in zip(out, weights):  # as each head sums its own terms
                total += float(terms.sum()) * weight
        grads = sum_into_first([list(out[len(weights):]) for out in outs])
        return total, dict(zip(net.param_shapes, grads))

    def _run_in_shards(self, B: int, shards: int, xs: dict, ls: dict, p: dict, rows: list,
                       weights: list) -> tuple:
        """(loss, gradients) by the compiled step in shards of the batch's
        rows, all in one call on Numba's threads (emit_shards.py)."""
        if self.sharded is None:
            gen = generate_shards(self.plan, self.net.dtype.name, self.loaded.module.__name__)
            key = cache_key("network step in shards", self.net.dtype.name, gen.source)
            self.sharded = load_module(gen.source, key, {"loss_and_grad_in_shards": gen.signature})
            self.step_address = address_of(self.loaded.module.loss_and_grad, self.signature)
        bounds = np.array([r.start for r in shard_rows(B, shards)] + [B], np.int64)
        sums, flat = self.sharded.module.loss_and_grad_in_shards(
            self.step_address, bounds, *self._arguments(list(xs.values()), list(ls.values()), p,
                                                        rows))
        total = float(sums.sum(axis=0) @ np.asarray(weights, np.float64))
        grads, start = {}, 0
        for name, a in p.items():
            grads[name] = flat[start:start + a.size].reshape(a.shape)
            start += a.size
        return total, grads

    def _in_one_loop(self) -> bool:
        """Whether this step's shards run in one parallel loop (emit_shards.py)
        rather than each handed to a thread from Python."""
        return all(layer.runner.parallel.threads > 1 for layer, _ in self.cells) \
            and parallel_loops_hand_off_fast()

    def _keep_unsharded_runs_on_one_blas_thread(self) -> None:
        """From a network's first sharded step on, its unsharded runs (an
        epoch's last, smaller batch, validation, sampling) keep to one BLAS
        thread: after a call on several, OpenBLAS's threads spin on their
        cores for about 0.1 s and take the cores the next steps' shards run
        on. Measured on 2 cores (the CharLM's step in 2 shards): one batch
        in 60 run whole on BLAS's 2 threads made the pass over all 60 take
        1.72–2.23× as long as with that batch on one thread
        (benchmarks/step_shards.py)."""
        for layer, _ in self.cells:
            runner = layer.runner
            if runner.parallel.small_step_flops != math.inf:
                runner.parallel = dataclasses.replace(runner.parallel, small_step_flops=math.inf)

    def _plan(self, shape: dict, in_one_loop: bool) -> RunPlan | None:
        """The cells' plan for a batch of these shapes (None where they
        differ, or for an empty batch): the step shards the batch's rows
        where they would, each shard the whole step on its own thread."""
        plans = set()
        for layer, part in self.cells:
            T, B = shape[self.plan.lengths_of[part.reads]]
            if T * B == 0:
                return None
            runner = layer.runner
            plans.add(runner._plan(T, B, in_one_loop))
            for run, backward in (("forward", False), ("backward", True)):  # as the cells check
                runner._check_memory(f"a {run} run over T={T}, B={B} needs",
                                     runner._run_bytes(T, B, backward),
                                     "run a smaller batch or fewer steps at a time")
        if len(plans) > 1:
            return None
        return plans.pop() if plans else RunPlan(1, 1)

    def _run(self, xs: list, ls: list, p: dict, rows: list) -> tuple:
        """The compiled step on these arrays: each head's loss terms, then
        every parameter's gradient."""
        return self.loaded.module.loss_and_grad(*self._arguments(xs, ls, p, rows))

    def _arguments(self, xs: list, ls: list, p: dict, rows: list) -> tuple:
        """The compiled step's arguments, in its order (emit_step.py)."""
        return (*self.addresses, *xs, *ls, *p.values(), *(a for r in rows for a in r))


def _shard(xs: dict, ls: dict, r: slice) -> tuple[list, list]:
    """A shard's inputs and lengths: the batch's rows `r`."""
    return [np.ascontiguousarray(x[:, r]) for x in xs.values()], [l[r] for l in ls.values()]


def _rows_of(rows: list, r: slice) -> list:
    """Each head's labelled rows (steps, examples, dense targets, weight)
    among the examples `r`, numbered from r.start."""
    out = []
    for t, b, dense, weight in rows:
        keep = (b >= r.start) & (b < r.stop)
        out.append((t[keep], b[keep] - r.start, dense[keep], weight))
    return out


def _module(k: Kernel):
    return sys.modules[k.module]


def _dims(name: str, shape: tuple) -> int:
    if len(shape) not in (1, 2):
        raise Unfused(f"parameter {name} has {len(shape)} dimensions")
    return len(shape)


def _parts(net, layer, reads: str, writes: str) -> list:
    """The layer as the step's parts, in the order they run: cells (a
    stack's, one after another, its inner sequences named after it: `h.0`)
    and bidirectional layers of two cells."""
    if isinstance(layer, CellLayer):
        return [_cell_part(layer, reads, writes)]
    if isinstance(layer, Stack):
        parts, last = [], len(layer.children) - 1
        for i, child in enumerate(layer.children):
            out = writes if i == last else f"{writes}.{i}"
            parts += _parts(net, child, reads, out)
            reads = out
        return parts
    if isinstance(layer, Bidirectional) and all(isinstance(c, CellLayer)
                                                for c in (layer.fwd, layer.bwd)):
        back = f"{writes} reversed"
        fwd = _cell_part(layer.fwd, reads, f"{writes} forward")
        bwd = _cell_part(layer.bwd, back, f"{writes} backward")
        tokens = net.inputs.get(reads, ("",))[0] == "tokens"
        return [BiPart(reads, back, writes, tokens, fwd, bwd,
                       (layer.fwd.out_size, layer.bwd.out_size))]
    raise Unfused(f"a {type(layer).__name__} layer of this shape")


def _check_inits(plan: StepPlan) -> None:
    """A cell starting from another's final states: the other a plain cell
    layer that runs before it, with the same states, and no other cell
    starting from it (its states' gradient is then that cell's alone)."""
    order = {c.prefix: i for i, c in enumerate(plan.layers) if isinstance(c, CellPart)}
    for cell in plan.cells():
        if cell.init is None:
            continue
        source = plan.layers[order[cell.init]] if cell.init in order else None
        if (source is None or cell.prefix not in order or order[cell.init] > order[cell.prefix]
                or {n for n, _ in source.states} != {n for n, _ in cell.states}
                or sum(d.init == cell.init for d in plan.cells()) > 1):
            raise Unfused(f"layer {cell.prefix} starts from {cell.init}'s final states in a way "
                          "the step does not cover")


def _lengths_of(net, layers) -> dict[str, str]:
    """Each sequence's input, whose lengths it has."""
    root = {n: n for n in net.inputs}
    for part in layers:
        root[part.writes] = root[part.reads]
        if isinstance(part, BiPart):
            for c in (part.forward, part.backward):
                root[c.writes] = root[c.reads] = root[part.reads]
    return root


def _kernel(loaded, function: str, signature: str, label: str) -> Kernel:
    return Kernel(loaded.module.__name__, function, signature, label)


def _cell_part(layer: CellLayer, reads: str, writes: str) -> CellPart:
    runner = layer.runner
    if layer.vocabulary and layer.tokens is None:
        raise Unfused("token ids read as one-hot vectors")
    if not hasattr(runner, "loaded"):
        raise Unfused("a cell not compiled")
    sig = runner._signatures()
    lookups, columns = [], []
    if layer.tokens is not None:
        lookups = [Lookup(k.name, f"{layer.prefix}.{k.weight}", k.lo, k.hi)
                   for k in layer.tokens.lookups]
        for c in layer.tokens.columns:
            cols = layer._cols[c.name]
            if not isinstance(cols, slice):
                raise Unfused("a weight's kept columns are not one block")
            columns.append(Columns(c.name, f"{layer.prefix}.{c.weight}", cols.start, cols.stop))
    own = {n: f"{layer.prefix}.{n}" for n in runner.param_shapes if f"{layer.prefix}.{n}"
           in layer.names}
    if set(own) | {c.param for c in columns} != set(runner.param_shapes):
        raise Unfused("a cell parameter that is not a network parameter")
    return CellPart(
        prefix=layer.prefix, reads=reads, writes=writes,
        forward=_kernel(runner.loaded, "forward", sig["forward"], f"{layer.prefix} forward"),
        backward=_kernel(runner.loaded, "backward", sig["backward"], f"{layer.prefix} backward"),
        size_args=tuple(runner._size_args), inputs=list(runner._inputs_order),
        states=[(s, runner.state_sizes[s]) for s in runner._states_order],
        params=list(runner.param_shapes), own=own, n_tapes=runner._n_tapes,
        lookups=lookups, columns=columns, init=layer.init or None)


def _head_part(net, h, loss: str) -> HeadPart:
    if any(net.inputs.get(n, ("",))[0] == "tokens" for n in h.reads):
        raise Unfused(f"output {h.name} reads token ids")
    kernels = h.compiled_loss(loss)
    if kernels is None:
        raise Unfused(f"output {h.name}'s loss is not generated")
    fwd, bwd = kernels
    g, _ = h.graphs(loss)
    return HeadPart(
        name=h.name,
        reads=[(v.name, v.size.value()) for v in h.graph.inputs],
        params=list(h.params), target=g.inputs[-1].name, terms=g.outputs[0].name,
        loss=_kernel(fwd.loaded, "run", fwd.signature, f"{h.name} loss"),
        loss_args=list(fwd.args),
        loss_returns=list(fwd.returns),
        backward=_kernel(bwd.loaded, "run", bwd.signature, f"{h.name} loss backward"),
        backward_args=list(bwd.args),
        backward_returns=list(bwd.returns), loss_sizes=tuple(fwd._size_args),
        backward_sizes=tuple(bwd._size_args))
