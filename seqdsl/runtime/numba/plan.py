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

Every size here (an operand's, a block's columns, a member's offset) is a
Size over the cell's size symbols, never a number: the plan, like the code
written from it, holds for every binding of the sizes.

The rest of the kernel plan (kernel_plan.py) builds on these groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.graph import Graph, Size

# The forward products, their backward products per part and their weight
# gradients, each op: whether it applies its weight transposed (`Wᵀ h`).
PRODUCTS = {"linear": False, "tlinear": True}
PART_GRADIENTS = {"linear_t": False, "tlinear_t": True}
WEIGHT_GRADIENTS = {"outer": False, "touter": True}


@dataclass
class Member:
    linear: str  # the forward linear equation's output name
    weight: str
    # The block of W's columns applied to the group's operand; W's rows for a
    # transposed member, whose block of Wᵀ is W[cols]ᵀ.
    cols: tuple[Size, Size]
    offset: Size  # where its rows sit in the group's stacked product
    rows: Size
    grad: str | None = None  # the backward value holding d(linear output)
    transposed: bool = False  # applied as Wᵀ

    def block(self) -> str:
        """The block of the weight it applies, as the plan prints it."""
        lo, hi = self.cols
        return f"{self.weight}[{lo}:{hi}, :]" if self.transposed \
            else f"{self.weight}[:, {lo}:{hi}]ᵀ"


@dataclass
class Group:
    operand: str  # name of the value all blocks are applied to
    size: Size  # its size
    hoisted: bool  # an input: computed for all steps at once
    members: list[Member] = field(default_factory=list)

    @property
    def width(self) -> Size:
        return sum((m.rows for m in self.members), Size())

    def __str__(self) -> str:
        blocks = " | ".join(m.block() for m in self.members)
        return (f"{self.operand} ({self.size}) × [{blocks}] → {self.width}"
                + (", hoisted" if self.hoisted else ""))


def product_groups(fwd: Graph, inputs: set[str]) -> dict[str, Group]:
    """The groups of a forward step graph, keyed by operand name."""
    groups: dict[str, Group] = {}
    for e in fwd.eqns:
        if e.op not in PRODUCTS:
            continue
        w, *parts = e.args
        lo = Size()
        for p in parts:
            g = groups.setdefault(p.name, Group(p.name, p.size, p.name in inputs))
            hi = lo + p.size
            g.members.append(Member(e.out.name, w.name, (lo, hi), g.width, e.out.size,
                                    transposed=PRODUCTS[e.op]))
            lo = hi
    return groups


def attach_backward(groups: dict[str, Group], fwd: Graph, bwd: Graph) -> dict[str, tuple]:
    """Fill in each member's gradient value from the backward graph's `outer`
    equations, and map each `linear_t` of the backward graph to the group it
    belongs to: {linear_t output name: (group operand, is the first member)}.
    """
    linears = [e for e in fwd.eqns if e.op in PRODUCTS]
    grad_of: dict[str, str] = {}  # linear output -> the name of its cotangent
    for e in bwd.eqns:
        if e.op in WEIGHT_GRADIENTS:
            g, *parts = e.args
            key = (e.attr("of"), [p.name for p in parts], WEIGHT_GRADIENTS[e.op])
            L = next(L for L in linears if (L.args[0].name, [p.name for p in L.args[1:]],
                                            PRODUCTS[L.op]) == key
                     and L.out.name not in grad_of)
            grad_of[L.out.name] = g.name
    for g in groups.values():
        for m in g.members:
            m.grad = grad_of.get(m.linear)
    by_grad = {(m.weight, m.grad, m.cols, m.transposed): g for g in groups.values()
               for m in g.members if m.grad}
    roles: dict[str, tuple[str, bool]] = {}
    for e in bwd.eqns:
        if e.op in PART_GRADIENTS:
            w, gv = e.args
            group = by_grad[(w.name, gv.name, tuple(e.attr("cols")), PART_GRADIENTS[e.op])]
            roles[e.out.name] = (group.operand, not any(o == group.operand
                                                        for o, _ in roles.values()))
    return roles


def held_by_products(groups: dict[str, Group], roles: dict[str, tuple]) -> set[str]:
    """The backward `linear_t` values that are zero in the step as generated:
    a group's step product is written under its first member's name and
    holds every block, and a hoisted group's product is made after the loop."""
    return {n for n, (op, first) in roles.items() if groups[op].hoisted or not first}
