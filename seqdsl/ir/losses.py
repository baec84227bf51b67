"""Losses as step graphs: a head's graph extended by the loss of one step.

A loss graph reads what its head reads plus the step's target, and its
output holds one term per class; the loss of a batch is the sum of those
terms over the labelled steps (divided by their number for a mean), so its
gradient is the autodiff of this graph, seeded with that sum's weights.
Cross-entropy and binary cross-entropy are taken from the head's logits
(before its softmax or sigmoid), through `log_softmax` and `softplus`, so
that logits of ±1e4 give finite losses and gradients.
"""
from __future__ import annotations

from dataclasses import replace

from .graph import BATCH, Eqn, Graph, Var, verify

LOSSES = {
    "cross_entropy": "softmax cross-entropy: −Σ target · log softmax(logits); "
                     "targets are class ids (or a distribution over the classes)",
    "binary_cross_entropy": "sigmoid binary cross-entropy per class: "
                            "softplus(logits) − target · logits",
    "mse": "squared error per entry: (ŷ − target)²",
}
# The loss a head gets unless one is named: a distribution gets cross-entropy,
# independent probabilities binary cross-entropy, anything else squared error.
DEFAULT_FOR_LAST_OP = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}
# The squashing a loss reads the logits beneath, where the head ends with it.
SQUASH_OF = {v: k for k, v in DEFAULT_FOR_LAST_OP.items()}


def default_loss(head: Graph) -> str:
    """The loss that fits a head: cross-entropy for a softmax head, binary
    cross-entropy for a sigmoid head, squared error otherwise."""
    return DEFAULT_FOR_LAST_OP.get(_last(head).op, "mse")


def _last(head: Graph) -> Eqn:
    (out,) = head.outputs
    return next(e for e in head.eqns if e.out.name == out.name)


def _fresh(graph: Graph, base: str) -> str:
    taken = set(graph.vars())
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def loss_graph(head: Graph, loss: str) -> Graph:
    """The graph of one step's loss terms for `head`: inputs are the head's
    inputs and `target` (the head's shape), output `loss` (one term per
    class). The head's own output is not computed when the loss reads the
    logits beneath it."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}")
    (out,) = head.outputs
    last = _last(head)
    eqns = list(head.eqns)
    names = [_fresh(head, b) for b in ("target", "loss", "logp", "diff", "product", "soft")]
    target = Var(names[0], BATCH, out.shape)
    result = Var(names[1], BATCH, out.shape)
    loc = last.loc

    def emit(name, op, *args) -> Var:
        v = Var(name, BATCH, out.shape)
        eqns.append(Eqn(v, op, tuple(args), (), loc))
        return v

    if loss == "mse":
        diff = emit(names[3], "sub", out, target)
        eqns.append(Eqn(result, "mul", (diff, diff), (), loc))
    else:
        logits = out
        if last.op == SQUASH_OF[loss]:
            eqns.remove(last)
            (logits,) = last.args
        if loss == "cross_entropy":
            logp = emit(names[2], "log_softmax", logits)
            eqns.append(Eqn(result, "neg", (emit(names[4], "mul", target, logp),), (), loc))
        else:
            soft = emit(names[5], "softplus", logits)
            eqns.append(Eqn(result, "sub", (soft, emit(names[4], "mul", target, logits)), (),
                            loc))
    graph = replace(head, name=f"{head.name}.{loss}", inputs=head.inputs + (target,),
                    eqns=tuple(eqns), outputs=(result,))
    return verify(graph)
