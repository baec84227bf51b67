"""What every backend's cell shares: a cell type bound to sizes and a dtype,
its forward and backward step graphs (symbolic, and specialised to the
sizes), its shapes, parameter
initialisation, memory estimates, and the checks of every argument a run
takes. A backend adds only how forward and backward run, and what its trace
keeps for backward.

Backends share this base and never inherit from each other, so a change in
how one runs cannot change what the other accepts. Neither this module nor
anything it imports loads Numba: `import seqdsl` must stay cheap.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from . import validate
from ..errors import SeqError
from ..ir.autodiff import backward as derive_backward
from ..ir.autodiff import saved_values
from ..ir.graph import BATCH, Graph
from ..ir.lower import CellType
from .init import initial_value, temporary_bytes
from .interp import specialise


@dataclass(frozen=True)
class Origin:
    """Which cell made a Result: its backward runs only on a cell of the same
    kind (the backends' traces differ: per-step values in numpy's, tapes in
    numba's)."""

    backend: str
    cell: str  # `cell LSTM (H=4, X=3, float64)`
    key: str  # the specialised step graph and dtype: equal for interchangeable cells

    def __str__(self) -> str:
        return f"{self.cell} on the {self.backend} backend"


@dataclass
class Trace:
    """What a forward run keeps for the backward run."""

    x: dict[str, np.ndarray]
    lengths: np.ndarray
    state0: dict[str, np.ndarray]
    tape: list  # the backend's own: per-step (active rows, saved values), or kernel tapes
    origin: Origin | None = None


@dataclass
class Result:
    outputs: np.ndarray  # (T, B, size of the output state); zero past each length
    final: dict[str, np.ndarray]  # each state at each example's last step
    trace: Trace


@dataclass
class Grads:
    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]  # (T, B, n) per input
    state0: dict[str, np.ndarray]  # (B, n) per state


class UnknownSizeWarning(UserWarning):
    """`sizes=` named a size the cell does not have."""


def bind_sizes(ct: CellType, hidden: int | None = None, input: int | None = None,
               sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Numbers for the cell's size symbols: `hidden` binds the states' symbol,
    `input` the input's, `sizes` any by name. Constraints the equations put on
    the input size are checked here, naming the sizes in conflict."""
    bound = dict(sizes or {})
    unknown = [s for s in bound if s not in ct.symbols]
    if unknown:  # a typo (`sizes={"h": 8}`) would otherwise go unnoticed
        warnings.warn(f"sizes: cell {ct.name} has no size {', '.join(map(repr, unknown))} (its "
                      f"sizes: {', '.join(ct.symbols) or 'none'}); ignored", UnknownSizeWarning,
                      stacklevel=3)
        bound = {s: v for s, v in bound.items() if s not in unknown}
    for name, value in (("hidden", hidden), ("input", input)):
        if value is not None and (not _whole(value) or value < 1):
            raise SeqError(f"{name}: expected a positive integer, given {value!r}")
    state_syms = [s for _, sz in ct.states for s in sz.symbols]
    in_syms = [s for _, sz in ct.inputs for s in sz.symbols]
    if hidden is not None:
        for s in state_syms:
            bound.setdefault(s, hidden)
    if input is not None:
        for s in in_syms:
            bound.setdefault(s, input)
    for c in ct.constraints:  # X = H: derive X when it was not given
        value = c.value.subst(bound)
        if c.symbol not in bound and value.is_const():
            bound[c.symbol] = value.value()
    missing = [s for s in ct.symbols if s not in bound]
    if missing:
        error = SeqError(f"cell {ct.name}: no size given for {', '.join(missing)}",
                         hint=_size_hint(ct, missing))
        error.missing_sizes = missing  # for a caller to say how to give them its own way
        raise error
    for s in ct.symbols:
        if not _whole(bound[s]) or bound[s] < 1:
            raise SeqError(f"cell {ct.name}: size {s} must be a positive integer, "
                           f"not {bound[s]!r}")
        bound[s] = int(bound[s])
    _check_constraints(ct, bound)
    return bound


def _check_constraints(ct: CellType, bound: dict[str, int]) -> None:
    for c in ct.constraints:
        want = c.value.subst(bound).value()
        if bound[c.symbol] != want:
            given = ", ".join(f"{s} = {bound[s]}" for s in sorted(c.value.symbols))
            raise SeqError(
                f"cell {ct.name} cannot take input size {c.symbol} = {bound[c.symbol]}: its "
                f"equations require {c.symbol} = {c.value}, which is {want} here ({given})",
                c.loc, source=ct.source, hint=f"instantiate it with input size {want}")


def _whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _size_hint(ct: CellType, missing: list[str]) -> str:
    """How to give the missing sizes in `instantiate`'s own terms."""
    state_syms = {s for _, sz in ct.states for s in sz.symbols}
    in_syms = {s for _, sz in ct.inputs for s in sz.symbols}
    named = (["hidden=N"] if state_syms & set(missing) else []) \
        + (["input=N"] if in_syms & set(missing) else [])
    others = [s for s in missing if s not in state_syms | in_syms]

    def by_name(symbols):
        return "sizes={" + ", ".join(f"{s!r}: N" for s in symbols) + "}"
    if others:
        named.append(by_name(others))
    alternative = f" (or {by_name(missing)})" if len(named) > 1 or not others else ""
    return f"pass {', '.join(named)}{alternative} to instantiate"


def _float_dtype(dtype, allowed: tuple[str, ...] | None) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f" or (allowed is not None and dt.name not in allowed):
        raise SeqError(f"dtype: expected {' or '.join(allowed or ('a float dtype',))}, "
                       f"given {dt.name if dt is not None else repr(dtype)}")
    return dt


class CellInstance(ABC):
    """A cell type at fixed sizes and dtype, on one backend.

    Every argument of `forward`, `backward` and `value_and_grad` is checked
    (see `validate`) before anything runs, and a run that would need more
    memory than the machine has free is refused up front. A backend runs
    `forward` and `backward` on the arguments `_forward_args` and
    `_backward_args` return, and says in `_tape_holds` what its tape is."""

    backend: str  # its name in messages and in each Result's origin
    dtypes: tuple[str, ...] | None = None  # the float dtypes it runs in; None: any

    def __init__(self, ct: CellType, sizes: dict[str, int], dtype=np.float64):
        self.type = ct
        self.sizes = sizes
        self.dtype = _float_dtype(dtype, self.dtypes)
        # The step graphs over the size symbols (what size-generic code is
        # written from), and at this cell's sizes (what the interpreter runs).
        self.symbolic_forward: Graph = ct.graph
        self.symbolic_backward: Graph = derive_backward(ct.graph)
        self.forward_graph: Graph = specialise(ct.graph, sizes)
        self.backward_graph: Graph = specialise(self.symbolic_backward, sizes)
        self.saved = [v.name for v in saved_values(self.forward_graph, self.backward_graph)]
        self.input_sizes = {n: s.subst(sizes).value() for n, s in ct.inputs}
        self.state_sizes = {n: s.subst(sizes).value() for n, s in ct.states}
        self.param_shapes = {v.name: tuple(d.value() for d in v.shape)
                             for v in self.forward_graph.params}
        self.param_dims = {n: "×".join(s.paren() for s in v.shape) for n, v in ct.params.items()}
        self._widths = self._step_widths()
        self._n_params = sum(int(np.prod(s)) for s in self.param_shapes.values())
        self.origin = Origin(self.backend, self.describe(),
                             f"{self.forward_graph}\n{self.dtype.name}")
        self._check_memory("its parameters need", self._param_count() * self.dtype.itemsize)

    @property
    def output(self) -> str:
        return self.type.output

    def describe(self) -> str:
        """`cell LSTM (H=4, X=3, float64)`"""
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"cell {self.type.name} ({sizes}, {self.dtype.name})"

    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Parameters as the spec asks: `param` initialisers, else weights
        uniform in ±1/sqrt(fan-in) and vectors at zero; made in the cell's
        dtype (a float32 cell gets the float64 cell's values, rounded)."""
        inits = {n: self.type.inits.get(n, ("default",)) for n in self.param_shapes}
        extra = max((temporary_bytes(inits[n], s) for n, s in self.param_shapes.items()),
                    default=0)
        self._check_memory("its parameters need",
                           self._param_count() * self.dtype.itemsize + extra)
        rng = np.random.default_rng(seed)
        return {n: initial_value(inits[n], s, rng, self.dtype)
                for n, s in self.param_shapes.items()}

    # ---- what a run takes and needs ----------------------------------------------------

    def _param_count(self) -> int:
        return self._n_params

    def _check_memory(self, what: str, nbytes: int, hint: str = "use smaller sizes") -> None:
        if nbytes >= validate.CHECKED_FROM_BYTES:  # else not checked: no message to make
            validate.check_memory(f"{self.describe()}: {what}", nbytes, hint)

    def _step_widths(self) -> tuple[int, int]:
        """Numbers per example and step: of the products and their gradients
        (with inputs and outputs), and of the values a forward run keeps."""
        fvars = self.forward_graph.vars()
        saved = sum(fvars[n].size.value() for n in self.saved if fvars[n].kind == BATCH)
        products = sum(e.out.size.value() for e in self.forward_graph.eqns if e.op == "linear")
        inputs = sum(self.input_sizes.values())
        return products + inputs + self.state_sizes[self.output], saved + inputs

    def _run_bytes(self, T: int, B: int, backward: bool) -> int:
        """About what one run allocates: per example and step, a forward run
        keeps the values its backward reads and its matrix products (and
        outputs, inputs); a backward run the products' gradients."""
        step, kept = self._widths
        per_batch = 2 * sum(self.state_sizes.values())
        if backward:
            total = T * B * step + B * per_batch + 2 * self._param_count()
        else:
            total = T * B * (step + kept) + B * per_batch
        return total * self.dtype.itemsize

    def _takes(self, what: str) -> str:
        return f"cell {self.type.name}'s {what}"

    def _forward_args(self, params, x, lengths, state0):
        """The checked arguments of a forward run: (params, inputs, T, B,
        lengths, initial states)."""
        xs, T, B = validate.inputs(x, self.input_sizes, self.dtype, self._takes("inputs"))
        self._check_memory(f"a forward run over T={T}, B={B} needs", self._run_bytes(T, B, False),
                           "run a smaller batch or fewer steps at a time")
        lengths = validate.lengths(lengths, T, B)
        states = validate.per_state("state0", state0, self.state_sizes, B, self.dtype,
                                    self._takes("states"))
        p = validate.params(params, self.param_shapes, self.param_dims, self.dtype,
                            self._takes("parameters"))
        return p, xs, T, B, lengths, states

    def _backward_args(self, params, result, d_outputs, d_final):
        """The checked arguments of a backward run: (params, trace, T, B,
        d_outputs, d_final)."""
        tr = self._own_trace(result)
        T, B = result.outputs.shape[:2]
        self._check_memory(f"a backward run over T={T}, B={B} needs", self._run_bytes(T, B, True),
                           "run a smaller batch or fewer steps at a time")
        p = validate.params(params, self.param_shapes, self.param_dims, self.dtype,
                            self._takes("parameters"))
        dout = validate.step_gradient(d_outputs, T, B, self.state_sizes[self.output], self.dtype)
        d_final = validate.per_state("d_final", d_final, self.state_sizes, B, self.dtype,
                                     self._takes("states"))
        return p, tr, T, B, dout, d_final

    def _own_trace(self, result) -> Trace:
        """The trace of a Result this cell (or one interchangeable with it) made."""
        if not isinstance(result, Result):
            raise SeqError(f"result: expected the Result of this cell's forward, given "
                           f"{validate.describe(result)}")
        origin = result.trace.origin
        if origin != self.origin:
            made_by = str(origin) if origin is not None else "no seqdsl cell"
            if origin is not None and str(origin) == str(self.origin):
                made_by += " (a different cell of that name)"
            raise SeqError(f"result: made by {made_by}; this is {self.origin}",
                           hint="backward takes a Result of this cell's own forward (each "
                                "backend keeps its own trace: per-step values in numpy's, "
                                "tapes in numba's)")
        self._check_trace(result)
        return result.trace

    def _check_trace(self, result: Result) -> None:
        """That a Result still holds what its forward made (its arrays are
        the user's to replace)."""
        tr = result.trace
        T, B = np.shape(next(iter(tr.x.values())))[:2]
        want = (T, B, self.state_sizes[self.output])
        if (np.shape(result.outputs) != want or np.shape(tr.lengths) != (B,)
                or not self._tape_holds(tr.tape, T, B)):
            raise SeqError(f"result: its outputs or trace are not as its forward made them "
                           f"(expected outputs of {validate.expected(want, self.dtype)}; "
                           f"given {validate.describe(result.outputs)})",
                           hint="pass backward the Result of this cell's forward, unchanged")

    @abstractmethod
    def _tape_holds(self, tape: list, T: int, B: int) -> bool:
        """Whether `tape` is still what this backend's forward kept over T
        steps of B examples: its backward reads it without checking."""

    # ---- running ----------------------------------------------------------------

    @abstractmethod
    def forward(self, params, x, lengths=None, state0=None) -> Result:
        """Run the cell over x (T, B, X); returns outputs, final states, trace."""

    @abstractmethod
    def backward(self, params, result: Result, d_outputs=None, d_final=None) -> Grads:
        """Backprop through time: gradients of a loss whose gradient is
        `d_outputs` (T, B, H) for the outputs and `d_final` for final states."""

    def value_and_grad(self, params, x, loss, lengths=None, state0=None):
        """Run forward, then backward through time for a loss of the outputs:
        `loss(outputs, final)` returns `(value, d_outputs, d_final)` (its
        gradients; `d_final` may be None). Returns `(value, Grads)`."""
        r = self.forward(params, x, lengths, state0)
        value, d_outputs, d_final = loss(r.outputs, r.final)
        return value, self.backward(params, r, d_outputs, d_final)
