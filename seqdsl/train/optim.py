"""Optimisers and gradient clipping over parameter dicts (`name -> array`).

Every optimiser updates the parameters in place and can hand out its whole
state -- arrays plus JSON-able scalars -- so a checkpoint can store it and a
fresh optimiser can go on bit for bit where the old one stopped. The update
rules are those of `torch.optim` with its defaults (SGD; SGD with momentum 0.9
and no dampening; Adam with bias correction), so numbers can be compared.
"""
from __future__ import annotations

import difflib
import math
from numbers import Real

import numpy as np

from ..errors import SeqError

OPTIMIZERS = ("sgd", "momentum", "adam")


class Optimizer:
    """Base class: a learning rate, a step count and per-parameter slots.

    A subclass names its slots (`SLOTS`, e.g. ("m", "v")), its scalar
    hyperparameters (`SCALARS`) and its compiled update (`KERNEL`, a function
    of updates.py, called once a step for each dtype of the parameters), and
    gives that update's scalars (`_scalars`).
    """

    name = "optimizer"
    SLOTS: tuple[str, ...] = ()
    SCALARS: tuple[str, ...] = ("lr",)
    KERNEL = ""

    def __init__(self, lr: float):
        self.lr = _positive(lr, "learning rate", "--lr 0.001")
        self.t = 0  # steps taken; Adam's bias correction depends on it
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.SLOTS}
        self._kept = None  # see _arrays

    def step(self, params: dict, grads: dict) -> None:
        """One update of every parameter in `params` (in place) from `grads`."""
        from . import updates  # Numba loads when training starts, not on import
        _same_names(params, grads)
        self.t += 1
        update = getattr(updates, self.KERNEL)
        groups, written_back = self._arrays(params)
        for dtype, (names, flats, slots) in groups.items():
            gs = tuple(_flat_gradient(name, grads[name], params[name].shape, dtype)
                       for name in names)
            update(flats, gs, *slots, *self._scalars(dtype.type))
        for p, flat in written_back:
            p[...] = flat.reshape(p.shape)

    def _arrays(self, params: dict) -> tuple[dict, list]:
        """Each dtype's parameter names, flat parameters and flat slots (one
        tuple per slot), and the parameters updated in a flat copy (those
        not contiguous) to write back. A training loop passes the same
        arrays every step: while it does, the tuples of the step before
        serve again (building them cost more than the update's loop)."""
        key = tuple((name, id(p), p.shape, p.dtype, p.flags.writeable)
                    for name, p in params.items() if isinstance(p, np.ndarray))
        if self._kept is not None and self._kept[0] == key and len(key) == len(params):
            return self._kept[1]
        from . import updates
        groups: dict[np.dtype, tuple[list, list, list]] = {}
        written_back = []  # (parameter, its flat copy)
        for name, p in params.items():
            if not (isinstance(p, np.ndarray) and p.dtype.kind == "f" and p.flags.writeable):
                raise SeqError(f"parameter {name}: expected a writeable floating-point array, "
                               f"given {_what(p)}")
            if p.flags.c_contiguous:
                flat = p.reshape(-1)
            else:  # updated in a flat copy, then written back
                flat = updates.flat(p, p.dtype)
                written_back.append((p, flat))
            names, flats, slots = groups.setdefault(p.dtype, ([], [], [[] for _ in self.SLOTS]))
            names.append(name)
            flats.append(flat)
            for into, slot in zip(slots, self.SLOTS):
                into.append(self._slot(slot, name, p))
        groups = {dtype: (names, tuple(flats), [tuple(s) for s in slots])
                  for dtype, (names, flats, slots) in groups.items()}
        # A copy is made afresh each step (the parameter may have changed), so
        # parameters that need one are never kept.
        self._kept = None if written_back else (key, (groups, written_back))
        return groups, written_back

    def _scalars(self, F) -> tuple:
        """The update's scalar arguments after its arrays, each of type F
        (the parameter's dtype, as NumPy rounds a Python float)."""
        raise NotImplementedError

    def _slot(self, slot: str, name: str, p: np.ndarray) -> np.ndarray:
        """The slot's array for parameter `name`, flat (a view)."""
        a = self.slots[slot].get(name)
        if a is not None and a.shape == p.shape and a.dtype == p.dtype and a.flags.c_contiguous:
            return a.reshape(-1)  # as it is after every step but the first
        table = self.slots[slot]
        if a is None:
            # Only a first step may start a slot at zero; later, a missing slot
            # means the state belongs to another set of parameters.
            if self.t > 1:
                raise SeqError(f"the {self.name} optimiser's state has no `{slot}` for "
                               f"parameter {name}", hint="the state was saved for other "
                               "parameters; start the optimiser afresh")
            a = table[name] = np.zeros(p.shape, p.dtype)
        elif a.shape != p.shape:
            raise SeqError(f"the {self.name} optimiser's `{slot}` for {name} has shape "
                           f"{a.shape}, the parameter {p.shape}")
        elif a.dtype != p.dtype or not a.flags.c_contiguous:
            a = table[name] = np.ascontiguousarray(a, p.dtype)
        return a.reshape(-1)

    # ---- state -------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays keyed `slot/param`, JSON-able scalars) -- all `load_state` needs."""
        arrays = {f"{s}/{n}": a.copy() for s, table in self.slots.items()
                  for n, a in table.items()}
        names = sorted({n for table in self.slots.values() for n in table})
        meta = {"name": self.name, "t": self.t, "params": names}
        meta.update((k, getattr(self, k)) for k in self.SCALARS)
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        """Restore what `state` returned, hyperparameters included; SeqError if
        it is another optimiser's state or lacks a parameter's slot."""
        if not isinstance(meta, dict) or meta.get("name") != self.name:
            other = meta.get("name") if isinstance(meta, dict) else None
            raise SeqError(f"the saved optimiser state is {other or 'not an optimiser'}'s, "
                           f"not {self.name}'s", hint=f"use --optimizer {other}" if other
                           in OPTIMIZERS else None)
        missing = [k for k in ("t", "params", *self.SCALARS) if k not in meta]
        if missing:
            raise SeqError(f"the saved {self.name} state lacks {', '.join(missing)}")
        if not (isinstance(meta["params"], list)
                and all(isinstance(n, str) for n in meta["params"])):
            raise SeqError(f"the saved {self.name} state's parameter list is not a list of "
                           "names")
        wanted = {f"{s}/{n}" for s in self.SLOTS for n in meta["params"]}
        absent = sorted(wanted - set(arrays))
        extra = sorted(set(arrays) - wanted)
        if absent or extra:
            what = (f"has no {', '.join(absent)}" if absent
                    else f"has unexpected {', '.join(extra)}")
            raise SeqError(f"the saved {self.name} state {what}",
                           hint="the state does not match its parameter list")
        self.t = int(meta["t"])
        for k in self.SCALARS:
            setattr(self, k, float(meta[k]))
        self.slots = {s: {} for s in self.SLOTS}
        self._kept = None
        for key in sorted(wanted):
            slot, name = key.split("/", 1)
            self.slots[slot][name] = np.array(arrays[key], copy=True)


class SGD(Optimizer):
    """p -= lr * g"""

    name = "sgd"

    KERNEL = "sgd"

    def _scalars(self, F):
        return (F(self.lr),)


class Momentum(Optimizer):
    """v = beta*v + g; p -= lr*v  (torch.optim.SGD, momentum=beta, dampening 0)."""

    name = "momentum"
    SLOTS = ("v",)
    SCALARS = ("lr", "beta")

    def __init__(self, lr: float, beta: float = 0.9):
        super().__init__(lr)
        self.beta = _fraction(beta, "momentum")

    KERNEL = "momentum"

    def _scalars(self, F):
        return F(self.beta), F(self.lr)


class Adam(Optimizer):
    """Kingma & Ba with bias correction, as torch.optim.Adam:
    m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
    p -= (m / (sqrt(v)/sqrt(1-beta2**t) + eps)) * lr/(1-beta1**t)."""

    name = "adam"
    SLOTS = ("m", "v")
    SCALARS = ("lr", "beta1", "beta2", "eps")

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.beta1 = _fraction(beta1, "beta1")
        self.beta2 = _fraction(beta2, "beta2")
        self.eps = _positive(eps, "Adam's eps", None)

    KERNEL = "adam"

    def _scalars(self, F):
        step_size = self.lr / (1 - self.beta1 ** self.t)
        root = math.sqrt(1 - self.beta2 ** self.t)
        return (F(self.beta1), F(1 - self.beta1), F(self.beta2), F(1 - self.beta2), F(root),
                F(self.eps), F(step_size))


_CLASSES = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float) -> Optimizer:
    """The optimiser called `name` (one of OPTIMIZERS) with learning rate `lr`."""
    cls = _CLASSES.get(name)
    if cls is None:
        close = difflib.get_close_matches(str(name), OPTIMIZERS, n=1)
        raise SeqError(f"unknown optimiser {name!r}; the optimisers are "
                       f"{', '.join(OPTIMIZERS)}",
                       hint=f"did you mean {close[0]}?" if close else None)
    return cls(lr)


# ---- clipping -----------------------------------------------------------------------------


def global_norm(grads: dict) -> float:
    """The L2 norm of all gradients together, as one vector."""
    from . import updates
    # Squared and summed in float64, so float32 gradients near 1e19 do not
    # overflow; one compiled call for all the gradients of a dtype.
    by_dtype: dict[np.dtype, list] = {}
    for g in grads.values():
        a = np.asarray(g)
        if a.dtype.kind not in "fiu":
            a = a.astype(np.float64)
        by_dtype.setdefault(a.dtype, []).append(np.ascontiguousarray(a).reshape(-1))
    return math.sqrt(sum(updates.sum_of_squares(tuple(arrays)) for arrays in by_dtype.values()))


def clip_by_global_norm(grads: dict, max_norm: float, norm: float | None = None) -> float:
    """Scale every gradient (in place) so the global norm is at most
    `max_norm`; returns the norm before clipping. `norm`: `global_norm(grads)`
    where the caller has it already."""
    max_norm = _positive(max_norm, "the clipping norm", "--clip-norm 5")
    norm = global_norm(grads) if norm is None else norm
    # A non-finite norm is left for the caller to report: scaling by 0 or nan
    # would hide which gradients exploded.
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for name, g in grads.items():
            _inplace(grads, name, g, lambda a: np.multiply(a, scale, out=a))
    return norm


def clip_by_value(grads: dict, limit: float) -> None:
    """Clamp every gradient element (in place) to [-limit, limit]."""
    limit = _positive(limit, "the clipping value", "--clip-value 1")
    for name, g in grads.items():
        _inplace(grads, name, g, lambda a: np.clip(a, -limit, limit, out=a))


def _inplace(grads: dict, name: str, g, op) -> None:
    # Arrays the caller cannot have written to (views of read-only buffers,
    # lists) are replaced in the dict instead.
    if isinstance(g, np.ndarray) and g.flags.writeable and g.dtype.kind == "f":
        op(g)
    else:
        a = np.array(g, dtype=np.result_type(np.asarray(g).dtype, np.float32))
        op(a)
        grads[name] = a


# ---- checks -------------------------------------------------------------------------------


def _flat_gradient(name: str, g, shape: tuple, dtype) -> np.ndarray:
    """The gradient of parameter `name` as a flat C-contiguous array of its
    dtype (a view where it can be)."""
    ready = type(g) is np.ndarray and g.dtype == dtype and g.flags.c_contiguous
    g = g if ready else np.asarray(g)
    if g.shape != shape:
        raise SeqError(f"the gradient of {name} has shape {g.shape}, the parameter {shape}")
    if ready:
        return g.reshape(-1)
    from . import updates
    return updates.flat(g, dtype)


def _same_names(params: dict, grads: dict) -> None:
    missing = [n for n in params if n not in grads]
    extra = [n for n in grads if n not in params]
    if missing:
        raise SeqError(f"no gradient for parameter {', '.join(missing)}")
    if extra:
        raise SeqError(f"a gradient for {', '.join(extra)}, which is not a parameter")


def _what(p) -> str:
    if not isinstance(p, np.ndarray):
        return type(p).__name__
    return f"{p.dtype}" + ("" if p.flags.writeable else ", read-only")


def _real(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (Real, np.number)):
        raise SeqError(f"{what} must be a number, not {x!r}")
    return float(x)


def _positive(x, what: str, example: str | None) -> float:
    v = _real(x, what)
    if not (math.isfinite(v) and v > 0):
        raise SeqError(f"{what} must be a positive finite number, not {x!r}",
                       hint=f"for example {example}" if example else None)
    return v


def _fraction(x, what: str) -> float:
    v = _real(x, what)
    if not 0 <= v < 1:
        raise SeqError(f"{what} must be in [0, 1), not {x!r}")
    return v
