"""Finite-difference checks of a whole network with its loss.

A random batch of variable-length sequences (one example of full length, one
of length 0 when the batch has room), random targets for every head (class
ids with some steps unlabelled for cross-entropy, values for the others),
random weights; the gradient `loss_and_grad` derives for every parameter is
compared with central differences of the loss, entry by entry, with the
steps, the extrapolation and the error measure of the cell check
(`tools.gradcheck.derivative`). A network has
many more weights than a cell, so at most `entries` entries of each
parameter, drawn at random, are compared (all of them when there are fewer).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.network import Network
from .gradcheck import _finite_error, derivative


@dataclass
class NetworkProblem:
    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def random_network_problem(net: Network, steps: int = 5, batch: int = 3, seed: int = 0,
                           scale: float = 0.5, steps_by_input: dict[str, int] | None = None
                           ) -> NetworkProblem:
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, scale, s).astype(net.dtype) for k, s in net.param_shapes.items()}
    inputs, lengths = {}, {}
    for n, (kind, size) in net.inputs.items():
        T = (steps_by_input or {}).get(n, steps)
        inputs[n] = (rng.integers(0, size, (T, batch)) if kind == "tokens"
                     else rng.normal(0, 1, (T, batch, size)).astype(net.dtype))
        ls = rng.integers(1, T + 1, batch)
        ls[0] = T
        if batch > 2:
            ls[-1] = 0
        lengths[n] = ls
    targets = {}
    for h in net.heads:
        T = _steps_of(net, h.reads[0], inputs)
        where = (T, batch) if h.per_step else (batch,)
        if h.default_loss == "cross_entropy":
            ids = rng.integers(0, h.size, where)
            ids[rng.random(where) < 0.2] = -1  # unlabelled
            targets[h.name] = ids
        elif h.default_loss == "binary_cross_entropy":
            targets[h.name] = rng.uniform(0, 1, where + (h.size,))
        else:
            targets[h.name] = rng.normal(0, 1, where + (h.size,))
    return NetworkProblem(params, inputs, lengths, targets)


def _steps_of(net: Network, sequence: str, inputs) -> int:
    while sequence in net.type.reads:
        sequence = net.type.reads[sequence]
    return inputs[sequence].shape[0]


def network_loss(net: Network, pb: NetworkProblem, params=None) -> float:
    """The loss alone (a forward run), as `loss_and_grad` gives it."""
    return net.loss(net.forward(params or pb.params, pb.inputs, pb.lengths), pb.targets)


def gradcheck_network(net: Network, pb: NetworkProblem, entries: int | None = 25,
                      seed: int = 0) -> dict[str, float]:
    """The worst relative error of each parameter's derived gradient against
    central differences over (at most `entries` of) its entries; infinite
    where either side is not finite."""
    dtype = np.dtype(net.dtype)
    rng = np.random.default_rng(seed)
    value, grads = net.loss_and_grad(pb.params, pb.inputs, pb.lengths, pb.targets)
    errors = {}
    for name, p in pb.params.items():
        every = list(np.ndindex(p.shape))
        if entries is not None and len(every) > entries:
            every = [every[i] for i in rng.choice(len(every), entries, replace=False)]
        numeric, analytic = np.zeros(len(every)), np.zeros(len(every))
        for j, i in enumerate(every):
            moved = {**pb.params, name: p.copy()}

            def moved_by(up, down, i=i, moved=moved):
                moved[name][i] = up
                l_up = network_loss(net, pb, moved)
                moved[name][i] = down
                return l_up - network_loss(net, pb, moved)

            numeric[j] = derivative(moved_by, float(p[i]), dtype)
            analytic[j] = grads[name][i]
        errors[name] = _finite_error(analytic, numeric) if np.isfinite(value) else float("inf")
    return errors
