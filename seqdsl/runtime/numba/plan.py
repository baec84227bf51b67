"""What the code generator decides before it writes a line: which matrix
products become one stacked product, which are hoisted out of the time loop,
and how the backward step's products and weight gradients map onto them.

Every `linear(W, p1, p2, ...)` of a step is a sum of blocks `W[:, cols_i] p_i`.
Blocks applied to the same operand p (the four gates of an LSTM reading
`a<t-1>`) form a *group*: one product `p @ S_p` with the blocks stacked side
by side in S_p, so a step makes one GEMM per distinct operand, and no
concatenated copy of [a, x] is ever made. A group whose operand is a cell
input (x) does not depend on the recurrence: it is computed for all T·B rows
in one product before the loop (hoisted). In the backward step the same
groups give one product `dY_p @ S_pᵀ` per operand per step (the cotangents
of the group's blocks side by side in dY_p), hoisted for inputs to one
product after the loop, and every weight's gradient comes from one product
`P_allᵀ @ dY_all` over all time steps after the loop.

The rest of the kernel plan (kernel_plan.py) builds on these groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.graph import Graph


@dataclass
class Member:
    linear: str  # the forward linear equation's output name
    weight: str
    cols: tuple[int, int]  # the block of W's columns applied to the group's operand
    offset: int  # where its rows sit in the group's stacked product
    rows: int
    grad: str | None = None  # the backward value holding d(linear output)


@dataclass
class Group:
    operand: str  # name of the value all blocks are applied to
    size: int  # its size
    hoisted: bool  # an input: computed for all steps at once
    members: list[Member] = field(default_factory=list)

    @property
    def width(self) -> int:
        return sum(m.rows for m in self.members)

    def __str__(self) -> str:
        blocks = " | ".join(f"{m.weight}[:, {m.cols[0]}:{m.cols[1]}]ᵀ" for m in self.members)
        return (f"{self.operand} ({self.size}) × [{blocks}] → {self.width}"
                + (", hoisted" if self.hoisted else ""))


def product_groups(fwd: Graph, inputs: set[str]) -> dict[str, Group]:
    """The groups of a forward step graph, keyed by operand name."""
    groups: dict[str, Group] = {}
    for e in fwd.eqns:
        if e.op != "linear":
            continue
        w, *parts = e.args
        lo = 0
        for p in parts:
            g = groups.setdefault(p.name, Group(p.name, p.size.value(), p.name in inputs))
            hi = lo + p.size.value()
            g.members.append(Member(e.out.name, w.name, (lo, hi), g.width, e.out.size.value()))
            lo = hi
    return groups


def attach_backward(groups: dict[str, Group], fwd: Graph, bwd: Graph) -> dict[str, tuple]:
    """Fill in each member's gradient value from the backward graph's `outer`
    equations, and map each `linear_t` of the backward graph to the group it
    belongs to: {linear_t output name: (group operand, is the first member)}.
    """
    linears = [e for e in fwd.eqns if e.op == "linear"]
    grad_of: dict[str, str] = {}  # linear output -> the name of its cotangent
    for e in bwd.eqns:
        if e.op == "outer":
            g, *parts = e.args
            key = (e.attr("of"), [p.name for p in parts])
            L = next(L for L in linears if (L.args[0].name, [p.name for p in L.args[1:]]) == key
                     and L.out.name not in grad_of)
            grad_of[L.out.name] = g.name
    for g in groups.values():
        for m in g.members:
            m.grad = grad_of.get(m.linear)
    by_grad = {(m.weight, m.grad, m.cols): g for g in groups.values() for m in g.members
               if m.grad}
    roles: dict[str, tuple[str, bool]] = {}
    for e in bwd.eqns:
        if e.op == "linear_t":
            w, gv = e.args
            lo, hi = e.attr("cols")
            group = by_grad[(w.name, gv.name, (lo.value(), hi.value()))]
            roles[e.out.name] = (group.operand, not any(o == group.operand
                                                        for o, _ in roles.values()))
    return roles


def held_by_products(groups: dict[str, Group], roles: dict[str, tuple]) -> set[str]:
    """The backward `linear_t` values that are zero in the step as generated:
    a group's step product is written under its first member's name and
    holds every block, and a hoisted group's product is made after the loop."""
    return {n for n, (op, first) in roles.items() if groups[op].hoisted or not first}
