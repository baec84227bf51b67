"""A checked network at bound sizes and dtype, on one backend: parameters,
forward over whole sequences, and a loss with its gradients.

Layers run their cells' forward and backward through time (see layers.py);
heads and losses are step graphs run over all their rows at once (heads.py).
Gradients reach every parameter by the cells' derived backward passes and
the autodiff of the head and loss graphs: nothing here differentiates by
hand.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from ..errors import SeqError
from ..ir.network import NetworkType
from . import validate
from .backends import check_backend
from .heads import REDUCTIONS, HeadRun
from .init import initial_value
from .layers import Run, build
from .instance import UnknownSizeWarning


@dataclass
class NetworkResult:
    heads: dict[str, np.ndarray]  # (T, B, classes) per step, or (B, classes)
    sequences: dict[str, np.ndarray]  # (T, B, size) per sequence, zero past each length
    final: dict[str, dict[str, np.ndarray]]  # layer (`h.0.fwd`) -> its states at the end
    lengths: dict[str, np.ndarray] = field(default_factory=dict)  # per input and sequence
    run: Run | None = field(default=None, repr=False)


def bind_network_sizes(nt: NetworkType, input: int | None, sizes: dict | None) -> dict[str, int]:
    """Numbers for a network's size symbols: its inputs' sizes (a tokens
    input's is its vocabulary) and its outputs' numbers of classes."""
    symbols = list(dict.fromkeys(
        [k for _, _, s in nt.inputs for k in s.symbols]
        + [k for h in nt.heads for k in h.size.symbols]
        + [k for shape in nt.params.values() for s in shape for k in s.symbols]))
    bound = dict(sizes or {})
    unknown = [s for s in bound if s not in symbols]
    if unknown:
        warnings.warn(f"sizes: network {nt.name} has no size {', '.join(map(repr, unknown))} "
                      f"(its sizes: {', '.join(symbols)}); ignored", UnknownSizeWarning,
                      stacklevel=4)
        bound = {s: v for s, v in bound.items() if s not in unknown}
    if input is not None:
        if len(nt.inputs) != 1:
            raise SeqError(f"input: network {nt.name} has {len(nt.inputs)} inputs; give their "
                           f"sizes by name", hint="sizes={" + ", ".join(
                               f"{str(s)!r}: N" for _, _, s in nt.inputs) + "}")
        bound.setdefault(str(nt.inputs[0][2]), input)
    missing = [s for s in symbols if s not in bound]
    if missing:
        error = SeqError(f"network {nt.name}: no size given for {', '.join(missing)}",
                         hint=_what_sizes_are(nt, missing))
        error.missing_sizes = missing
        raise error
    for s in symbols:
        v = bound[s]
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise SeqError(f"network {nt.name}: size {s} must be a positive integer, "
                           f"not {v!r}")
        bound[s] = int(v)
    return bound


def _what_sizes_are(nt: NetworkType, missing: list[str]) -> str:
    meaning = {}
    for name, kind, s in nt.inputs:
        meaning[str(s)] = (f"the vocabulary of `{name}`" if kind == "tokens"
                           else f"the size of `{name}`'s vectors")
    for h in nt.heads:
        meaning.setdefault(str(h.size), f"the number of classes of `{h.name}`")
    said = "; ".join(f"{s} is {meaning[s]}" for s in missing if s in meaning)
    return "pass sizes={" + ", ".join(f"{s!r}: N" for s in missing) + "} to instantiate" + (
        f" ({said})" if said else "")


class Network:
    """A network of cells and heads at fixed sizes and dtype, on one backend.
    On numba, `loss_and_grad` runs as one compiled function where the network
    allows (numba/step.py; the same numbers as layer by layer, to the bit, or
    to rounding where it runs in shards of a batch's rows); setting
    `fused = False` runs it layer by layer."""

    def __init__(self, nt: NetworkType, sizes: dict[str, int], dtype=np.float64,
                 backend: str = "numpy", threads: int | None = None):
        self.type = nt
        self.sizes = sizes
        self.backend = check_backend(backend)
        self._blas = _blas_policy(backend)
        vocabulary = {n: s.subst(sizes).value() for n, kind, s in nt.inputs if kind == "tokens"}
        self.layers = {n: build(n, layer, sizes, dtype, backend, vocabulary.get(nt.reads[n]),
                                threads)
                       for n, layer in nt.sequences.items()}
        first = next(c for layer in self.layers.values() for _, c in layer.cells())
        self.dtype = first.cell.dtype
        self.heads = [HeadRun(h, sizes, self.dtype, self.backend) for h in nt.heads]
        self.inputs = {n: (kind, s.subst(sizes).value()) for n, kind, s in nt.inputs}
        self.param_shapes = {n: tuple(d.subst(sizes).value() for d in shape)
                             for n, shape in nt.params.items()}
        # On numba, `loss_and_grad` runs one compiled step per tuple of losses
        # (numba/step.py) where the network allows; False: layer by layer.
        self.fused = self.backend == "numba"
        self._steps: dict[tuple[str, ...], object] = {}

    def describe(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"network {self.type.name} ({sizes}, {self.dtype.name})"

    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Every parameter by its network name: each cell's as the cell's own
        `init_params` makes them (each cell its own stream of the seed), the
        heads' weights uniform in ±1/sqrt(fan-in) and their vectors zero."""
        cells = [c for layer in self.layers.values() for _, c in layer.cells()]
        streams = np.random.SeedSequence(seed).spawn(len(cells) + 1)
        params = {}
        for c, ss in zip(cells, streams):
            own = c.cell.init_params(int(ss.generate_state(1)[0]))
            params.update((k, own[n]) for k, n in c.names.items())
        rng = np.random.default_rng(streams[-1])
        for n in self.param_shapes:
            if n not in params:
                params[n] = initial_value(("default",), self.param_shapes[n], rng, self.dtype)
        return {n: params[n] for n in self.param_shapes}

    # ---- arguments -------------------------------------------------------------------

    def _inputs(self, inputs, lengths) -> tuple[dict, dict]:
        """The checked inputs by name and each one's lengths."""
        names = list(self.inputs)
        if not isinstance(inputs, Mapping):
            if len(names) != 1:
                raise SeqError(f"inputs: network {self.type.name} has {len(names)} inputs; "
                               "pass a dict {name: array}", hint="inputs: " + ", ".join(names))
            inputs = {names[0]: inputs}
        validate.check_names("inputs", inputs, names, f"network {self.type.name}'s inputs")
        if not isinstance(lengths, Mapping):
            lengths = {n: lengths for n in names}
        validate.check_names("lengths", lengths, names, f"network {self.type.name}'s inputs")
        xs, ls, batch = {}, {}, None
        for n in names:
            kind, size = self.inputs[n]
            if kind == "tokens":
                xs[n] = self._tokens(n, inputs[n], size)
                T, B = xs[n].shape
            else:
                xs[n], T, B = self._vectors(n, inputs[n], size)
            if batch is not None and B != batch:
                raise SeqError(f"inputs[{n!r}]: a batch of {B} examples, but "
                               f"inputs[{names[0]!r}] has {batch}")
            batch = B
            ls[n] = validate.lengths(lengths[n], T, B)
            if kind == "tokens":
                self._check_ids(n, xs[n], ls[n], size)
        return xs, ls

    def _vectors(self, name, a, size):
        """Vectors (T, B, size) of the network's dtype; and T, B."""
        arg = f"inputs[{name!r}]"
        try:
            shape = np.shape(a)
        except (ValueError, TypeError):  # a ragged nest of lists
            shape = ()
        if len(shape) != 3:
            raise SeqError(f"{arg}: expected {validate.expected(('T', 'B', size), self.dtype)}; "
                           f"given {validate.describe(a)}", hint="an array (steps, batch, "
                           "features)")
        return validate.as_array(arg, a, self.dtype, shape[:2] + (size,), "T, B, size"), *shape[:2]

    def _tokens(self, name, ids, vocabulary: int) -> np.ndarray:
        """Integer ids (T, B), each in the vocabulary (padding may hold any)."""
        a = np.asarray(ids)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise SeqError(f"inputs[{name!r}]: expected integer token ids of shape (T, B); "
                           f"given {validate.describe(ids)}")
        return np.ascontiguousarray(a, np.int64)  # as the compiled step takes them

    def _check_ids(self, name, ids, lengths, vocabulary: int) -> None:
        used = ids[validate.valid_steps(len(ids), lengths)]
        bad = used[(used < 0) | (used >= vocabulary)]
        if bad.size:
            raise SeqError(f"inputs[{name!r}]: token id {int(bad[0])} is outside the "
                           f"vocabulary 0..{vocabulary - 1}")

    # ---- running -----------------------------------------------------------------------

    def forward(self, params, inputs, lengths=None, states=None) -> NetworkResult:
        """Every sequence, head and final state for a batch of inputs.
        `states` gives layers their first states by layer (`a`, `h.0.fwd`:
        the keys of `final`), as a model run one step at a time carries them;
        a layer given none starts from zero, or from its `init`."""
        with self._blas():
            return self._forward(self._checked(params, inputs, lengths), states)

    def blas_policy(self):
        """A context for work around this network's (a training loop's
        optimiser and clipping): on the numba backend NumPy's BLAS at one
        thread, so its pool does not fight the kernels' (numba/blas.py)."""
        return self._blas()

    def layer_names(self) -> list[str]:
        """The cell layers by the names `final` and `states` use."""
        return [prefix for layer in self.layers.values() for prefix, _ in layer.cells()]

    def _checked(self, params, inputs, lengths) -> tuple[dict, dict, dict]:
        """The checked parameters, inputs and each input's lengths."""
        return (self._params(params), *self._inputs(inputs, lengths))

    def _params(self, params) -> dict[str, np.ndarray]:
        return validate.params(params, self.param_shapes, {}, self.dtype,
                               f"network {self.type.name}'s parameters")

    def _forward(self, checked, states=None, heads=True) -> NetworkResult:
        """The layers' sequences, and the heads' outputs unless `heads` is
        False (a loss runs the heads itself)."""
        p, xs, ls = checked
        seqs, run = dict(xs), Run(starts=self._starts(states))
        for name, layer in self.layers.items():
            src = self.type.reads[name]
            ls[name] = ls[src]
            seqs[name] = layer.forward(p, seqs[src], ls[src], run)
        seqs.update(self._one_hot(xs, ls))
        outputs = {}
        for h in self.heads if heads else ():
            T, B = seqs[h.reads[0]].shape[:2]
            outputs[h.name] = h.forward(p, seqs, ls[h.reads[0]], T, B)
        run.params, run.sequences, run.owner = p, seqs, self
        return NetworkResult(outputs, {n: seqs[n] for n in self.layers}, run.finals, ls, run)

    def _starts(self, states) -> dict:
        """`states` checked: known layer names, dicts of state arrays (each
        layer's cell checks their shapes when it runs)."""
        if states is None:
            return {}
        if not isinstance(states, Mapping):
            raise SeqError(f"states: expected a dict by layer name, given {type(states).__name__}",
                           hint="layers: " + ", ".join(self.layer_names()))
        unknown = [k for k in states if k not in self.layer_names()]
        if unknown:
            raise SeqError(f"states: network {self.type.name} has no layer "
                           f"{', '.join(map(repr, unknown))}",
                           hint="layers: " + ", ".join(self.layer_names()))
        return {k: v for k, v in states.items() if v is not None}

    def _one_hot(self, xs, ls) -> dict[str, np.ndarray]:
        """The token inputs a head reads, as one-hot rows (zero past lengths)."""
        read = {n for h in self.heads for n in h.reads}
        out = {}
        for n, (kind, size) in self.inputs.items():
            if kind == "tokens" and n in read:
                valid = validate.valid_steps(len(xs[n]), ls[n])
                out[n] = np.eye(size, dtype=self.dtype)[np.where(valid, xs[n], 0)]
                out[n][~valid] = 0
        return out

    def loss_and_grad(self, params, inputs, lengths=None, targets=None, mask=None,
                      loss=None, reduction: str = "mean"):
        """The loss of the heads against `targets` (summed over heads) and its
        gradient for every parameter. `loss` names one of `ir.losses.LOSSES`
        (or a dict per head); by default a softmax head gets cross-entropy. A
        per-step head's targets are (T, B) class ids (negative: no label) or
        (T, B, classes); a last-step head's (B,) or (B, classes)."""
        if reduction not in REDUCTIONS:
            raise SeqError(f"reduction: expected one of {', '.join(REDUCTIONS)}; "
                           f"given {reduction!r}")
        with self._blas():
            return self._loss_and_grad(params, inputs, lengths, targets, mask, loss, reduction)

    def loss(self, result: NetworkResult, targets=None, mask=None, loss=None,
             reduction: str = "mean") -> float:
        """The loss `loss_and_grad` gives, from this network's `forward`
        result and without the gradients: one forward run gives both the
        outputs and the loss (as a validation pass needs)."""
        if reduction not in REDUCTIONS:
            raise SeqError(f"reduction: expected one of {', '.join(REDUCTIONS)}; "
                           f"given {reduction!r}")
        p, seqs, lengths = self._checked_result(result)
        per_head = _per_heads(self.heads, targets, mask, loss)
        total = 0.0
        with self._blas():
            for h in self.heads:
                T, B = seqs[h.reads[0]].shape[:2]
                total += h.loss(p, seqs, lengths[h.reads[0]], T, B,
                                *(per_head[k][h.name] for k in ("targets", "mask", "loss")),
                                reduction)
        return total

    def _checked_result(self, result) -> tuple[dict, dict, dict]:
        """The parameters, sequences and lengths of a forward result of this
        network, as its heads read them: the compiled heads trust them."""
        run = getattr(result, "run", None)
        if not isinstance(result, NetworkResult) or run is None or run.owner is not self:
            raise SeqError(f"result: expected the result of this network's forward, given "
                           f"{validate.describe(result)}", hint="out = net.forward(params, "
                           "inputs, lengths); net.loss(out, targets)")
        p = self._params(run.params)
        seqs, lengths = dict(run.sequences), {}
        for h in self.heads:
            T, B = np.shape(seqs[h.reads[0]])[:2]
            lengths[h.reads[0]] = validate.lengths(result.lengths.get(h.reads[0]), T, B)
            for n, v in zip(h.reads, h.graph.inputs):
                seqs[n] = validate.as_array(f"result: sequence {n!r}", seqs[n], self.dtype,
                                            (T, B, v.size.value()), "T, B, size")
        return p, seqs, lengths

    def _loss_and_grad(self, params, inputs, lengths, targets, mask, loss, reduction):
        checked = self._checked(params, inputs, lengths)
        if self.fused:
            done = self._fused_loss_and_grad(*checked, targets, mask, loss, reduction)
            if done is not None:
                return done
        r = self._forward(checked, heads=False)
        p, seqs = r.run.params, r.run.sequences
        per_head = _per_heads(self.heads, targets, mask, loss)
        grads = {n: np.zeros(s, self.dtype) for n, s in self.param_shapes.items()}
        d_seqs = {n: np.zeros_like(a) for n, a in seqs.items() if a.dtype == self.dtype}
        total = 0.0
        for h in self.heads:
            T, B = seqs[h.reads[0]].shape[:2]
            value, d_reads, d_params = h.loss_and_grad(
                p, seqs, r.lengths[h.reads[0]], T, B, per_head["targets"][h.name],
                per_head["mask"][h.name], per_head["loss"][h.name], reduction)
            total += value
            for n, ((t, b), d) in d_reads.items():
                d_seqs[n][t, b] += d
            for n, d in d_params.items():
                grads[n] += d
        for name in reversed(list(self.layers)):
            src = self.type.reads[name]
            d = self.layers[name].backward(p, d_seqs[name], r.lengths[src], r.run, grads)
            if d is not None:  # token ids have no gradient
                d_seqs[src] += d
        return total, grads

    def _fused_loss_and_grad(self, p, xs, ls, targets, mask, loss, reduction):
        """`loss_and_grad` by the network's compiled step from the checked
        arguments; None where it runs layer by layer instead."""
        per_head = _per_heads(self.heads, targets, mask, loss)
        losses = tuple(h.check_loss(per_head["loss"][h.name]) for h in self.heads)
        if losses not in self._steps:
            from .numba.step import fused_step
            self._steps[losses] = fused_step(self, losses)
        step = self._steps[losses]
        return None if step is None else step(p, xs, ls, per_head, reduction)


def _blas_policy(backend: str):
    """What runs around a network's work: on the numba backend, NumPy's BLAS
    kept to one thread so it does not fight the kernels' (see numba/blas.py)."""
    if backend != "numba":
        return contextlib.nullcontext
    from .numba.blas import numpy_blas_single_threaded
    return numpy_blas_single_threaded


def _per_heads(heads: list[HeadRun], targets, mask, loss) -> dict[str, dict]:
    return {k: _per_head(v, heads, k) for k, v in
            (("targets", targets), ("mask", mask), ("loss", loss))}


def _per_head(value, heads: list[HeadRun], what: str) -> dict:
    """A per-head argument by head name: a dict, or one value for the only
    head (a loss name or None applies to every head)."""
    names = [h.name for h in heads]
    if isinstance(value, Mapping):
        if what == "targets":  # every output needs its targets; a mask or loss may be left out
            validate.check_names(what, value, names, "outputs")
        unknown = [k for k in value if k not in names]
        if unknown:
            raise SeqError(f"{what}: no output {', '.join(map(repr, unknown))}; outputs: "
                           f"{', '.join(names)}")
        return {n: value.get(n) for n in names}
    if value is None or isinstance(value, str) or len(names) == 1:
        return {n: value for n in names}
    raise SeqError(f"{what}: the network has {len(names)} outputs ({', '.join(names)}); "
                   "pass a dict by output name")
