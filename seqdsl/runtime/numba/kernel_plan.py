"""The kernel plan: everything the emitters need to know about a cell's
`forward` and `backward` functions, decided from the step graphs before a
line is written, as plain data that prints.

It holds the product groups (plan.py), the backward step graph after its
zero terms are folded (`fold_zeros`), each step ordered into stages, the
values taped from forward to backward, the arrays each value is stored to,
and the functions' arguments and results. It holds no Python identifiers:
an array is a `Ref`, a role and the IR value it belongs to, and only the
emitters turn those into names (through one `Names`). Constants (K0, K1,
...) are numbered by the emitters, in the order the source first uses them.

It holds no numeric size either: sizes are Sizes over the cell's size
symbols, which both functions take as arguments, so one plan (and one
compiled module) serves a cell at every size.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...ir.graph import BATCH, MATRIX, VECTOR, Graph, Size, Var, verify
from ...ir.passes import fold_zeros
from .codegen import Stage, StepCode, size_symbols
from .plan import (PART_GRADIENTS, PRODUCTS, WEIGHT_GRADIENTS, Group, attach_backward,
                   held_by_products, product_groups)


@dataclass(frozen=True)
class Ref:
    """An array of the generated module: the `role` (`tape_`, `dY_`, ...) of
    the IR value `of`, or, when `of` is None, a name of the generator's own
    (`out`, `lengths`). The role `n_` is a size symbol's variable (`n_H`)."""
    role: str
    of: str | None = None
    suffix: str = ""

    def __str__(self) -> str:
        return self.role if self.of is None else f"{self.role}[{self.of}]{self.suffix}"


@dataclass(frozen=True)
class Target:
    """Where a step writes a value: row (t, b) of a (T, B, n) array, from
    column `offset` (the value's block in a stacked array) or whole."""
    array: Ref
    offset: Size | None = None

    def __str__(self) -> str:
        return f"{self.array}[t, b, {'' if self.offset is None else self.offset}:]"


@dataclass
class StepPlan:
    """One time step as a kernel's loop computes it."""
    graph: Graph
    # In order; a "gemm" stage is its group's product, the operand in `var`.
    stages: list[Stage]
    materialise: set[str]  # values kept in a (B, n) array: another stage reads them
    buffers: list[str]  # those the step computes, in graph order: allocated before the loop
    stores: dict[str, list[Target]]

    def __str__(self) -> str:
        lines = [f"  {describe(st)}" for st in self.stages]
        lines.append("  buffers: " + (", ".join(self.buffers) or "none"))
        for name, targets in self.stores.items():
            lines.append(f"  store {name} → " + ", ".join(map(str, targets)))
        return "\n".join(lines)


def describe(st: Stage) -> str:
    if st.kind == "gemm":
        return f"product of {st.var.name}"
    if st.kind == "store":
        return f"store {st.var.name}"
    if st.kind == "row":
        return f"row {st.eqns[0].op} → {st.eqns[0].out.name}"
    return f"loop over {st.size}: " + " ".join(e.out.name for e in st.eqns)


@dataclass
class KernelPlan:
    cell: str
    dtype: str
    sizes: list[str]  # the size symbols both functions take first, in order
    inputs: list[str]
    states: list[str]
    output: str
    groups: dict[str, Group]  # keyed by operand
    held: set[str]  # backward products zero in the step: a group product holds them
    taped: list[str]  # forward values the backward pass reads, by argument order
    zero_padded_tapes: set[str]  # read by a weight gradient's product past each length
    slices: dict[str, list[tuple[str, Size]]]  # linear -> (operand, column) of its products
    # A step product whose stacked weight is larger is made a block of rows at
    # a time; how many rows a block has is worked out at run time, from the sizes.
    chunk_bytes: int
    forward: StepPlan
    forward_args: list[Ref]
    forward_returns: list[Ref]
    backward: StepPlan
    backward_args: list[Ref]
    backward_returns: list[Ref]
    transposed_from_batch: int  # from this batch size on, backward products go transposed
    cotangents_in: dict[str, str]  # operand -> the operand whose dY array holds its blocks
    dy_zeroed: set[str]  # dY arrays some active row leaves unwritten: zeroed whole
    grad_from_product: set[str]  # inputs whose gradient their hoisted product makes whole
    product_results: dict[str, str]  # backward value -> operand whose step product it is
    state_grads: dict[str, str]  # state -> the backward value of d state<t-1>
    accumulated: list[str]  # vector gradients summed over the batch, step by step
    assigned_weights: set[str]  # weights whose blocks tile them: gradients assigned whole

    @property
    def params(self) -> tuple[Var, ...]:
        return self.forward.graph.params

    @property
    def step_groups(self) -> list[Group]:
        return [g for g in self.groups.values() if not g.hoisted]

    def __str__(self) -> str:
        sizes = ", ".join(self.sizes) or "no sizes"
        lines = [f"kernels of cell {self.cell} ({sizes}; {self.dtype})", "products:"]
        for g in self.groups.values():
            into = self.cotangents_in[g.operand]
            lines.append(f"  {g}; cotangents " + (" | ".join(str(m.grad) for m in g.members)
                                                  if into == g.operand else f"in dY of {into}"))
        lines.append("taped: " + ", ".join(self.taped))
        lines.append(_signature("forward", self.forward_args, self.forward_returns))
        lines.append(str(self.forward))
        lines.append(_signature("backward", self.backward_args, self.backward_returns))
        held = [e.out.name for e in self.backward.graph.eqns if e.out.name in self.held]
        lines.append("  zero in the step: " + (", ".join(held) or "nothing"))
        lines.append(str(self.backward))
        return "\n".join(lines)


def _signature(name: str, args: list[Ref], returns: list[Ref]) -> str:
    return f"{name}({', '.join(map(str, args))}) -> ({', '.join(map(str, returns))})"


def make_plan(cell: str, fwd: Graph, bwd: Graph, inputs: list[str], states: list[str],
              output: str, dtype: str, chunk_bytes: int,
              transposed_from_batch: int) -> KernelPlan:
    """The plan of the kernels of a cell's step graphs `fwd` and `bwd`, whose
    sizes are forms over size symbols (or numbers). Forward products whose
    stacked weight exceeds `chunk_bytes` are made a block of rows at a time."""
    groups = product_groups(fwd, set(inputs))
    bwd = verify(fold_zeros(bwd, held_by_products(groups, attach_backward(groups, fwd, bwd))))
    roles = attach_backward(groups, fwd, bwd)  # a cotangent may now go by another name
    taped, padded = _tapes(fwd, bwd, groups, inputs, states)
    outs = dict(zip([v.name for v in fwd.inputs + fwd.params], bwd.outputs))
    zeros = {e.out.name for e in bwd.eqns if e.op == "zeros" and e.out.kind == BATCH}
    cotangents_in = _shared_cotangents(groups)
    made = {e.out.name for e in bwd.eqns}
    f_args, f_returns, b_args, b_returns = _signatures(fwd, inputs, states, taped, outs)
    return KernelPlan(
        cell, dtype, size_symbols(fwd), list(inputs), list(states), output, groups,
        held=held_by_products(groups, roles), taped=taped, zero_padded_tapes=padded,
        slices=_slices(fwd, groups), chunk_bytes=chunk_bytes,
        forward=_forward_step(fwd, groups, taped, states, output),
        forward_args=f_args, forward_returns=f_returns,
        backward=_backward_step(fwd, bwd, groups, roles, cotangents_in, inputs, states, outs,
                                zeros),
        backward_args=b_args, backward_returns=b_returns,
        transposed_from_batch=transposed_from_batch,
        cotangents_in=cotangents_in,
        # Written at every active row when each block's gradient is made in the step.
        dy_zeroed={g.operand for g in groups.values() if cotangents_in[g.operand] == g.operand
                   and not all(m.grad in made and m.grad not in zeros for m in g.members)},
        grad_from_product={n for n in inputs if outs[n].name in zeros and n in groups},
        product_results={n: op for n, (op, first) in roles.items()
                         if first and not groups[op].hoisted},
        state_grads={s: outs[f"{s}<t-1>"].name for s in states},
        accumulated=[e.out.name for e in bwd.eqns if e.op == "bsum"],
        assigned_weights=_assigned_weights(fwd, groups))


def _signatures(fwd: Graph, inputs: list[str], states: list[str], taped: list[str],
                outs: dict[str, Var]) -> tuple[list[Ref], ...]:
    """The arguments and results of `forward` and of `backward`, in order:
    each takes the size symbols' values first. The caller (runtime.py)
    passes and unpacks them by position."""
    sizes = [Ref("n_", k) for k in size_symbols(fwd)]
    params = [Ref("", p.name) for p in fwd.params]
    clean, tapes = [Ref("in_", n) for n in inputs], [Ref("tape_", n) for n in taped]
    return (sizes + [Ref("", n) for n in inputs] + [Ref("lengths")]
            + [Ref("", s, "0") for s in states] + params,
            [Ref("out")] + [Ref("state_", s) for s in states] + clean + tapes,
            sizes + [Ref("dout")] + [Ref("d", s) for s in states] + [Ref("lengths")] + clean
            + tapes + params,
            [Ref("dx_", n) for n in inputs] + [Ref("gstate_", s) for s in states]
            + [Ref("d_", p.name) if p.kind == MATRIX else Ref("vec_", outs[p.name].name)
               for p in fwd.params])


def _tapes(fwd: Graph, bwd: Graph, groups: dict[str, Group], inputs: list[str],
           states: list[str]) -> tuple[list[str], set[str]]:
    """The forward values the backward pass reads, or that weight gradients
    need (inputs come back whole, vectors are recomputed); and those of them
    a weight gradient's product reads, whose rows past a length stay zero."""
    fwd_vars = fwd.vars()
    saved = [v.name for v in bwd.inputs[len(fwd.outputs):]]
    operands = {g.operand for g in groups.values()}
    taped = [n for n in dict.fromkeys(saved + list(operands))
             if n not in inputs and fwd_vars[n].kind != VECTOR]
    prev = {f"{s}<t-1>" for s in states}
    return taped, {n for n in taped if n in operands and n not in prev}


def _slices(fwd: Graph, groups: dict[str, Group]) -> dict[str, list[tuple[str, Size]]]:
    """For each forward linear, the column of each product its blocks sit at."""
    slices = {}
    for e in fwd.eqns:
        if e.op not in PRODUCTS:
            continue
        w, *parts = e.args
        slices[e.out.name], lo = [], Size()
        for p in parts:
            cols = (lo, lo + p.size)
            lo = cols[1]
            m = next(m for m in groups[p.name].members
                     if (m.linear, m.weight, m.cols) == (e.out.name, w.name, cols))
            slices[e.out.name].append((p.name, m.offset))
    return slices


def _shared_cotangents(groups: dict[str, Group]) -> dict[str, str]:
    """Groups whose blocks belong to the same products in the same order (the
    a<t-1> and x groups of an LSTM) hold the same cotangents: one dY serves
    all of them, the first one's."""
    owner: dict[tuple, str] = {}
    into = {}
    for g in groups.values():
        layout = tuple((m.linear, m.offset, m.rows) for m in g.members)
        into[g.operand] = owner.setdefault(layout, g.operand)
    return into


def _assigned_weights(fwd: Graph, groups: dict[str, Group]) -> set[str]:
    """Weights whose blocks cover each column once (a weight that is not
    shared, nor applied transposed): each block of its gradient is written
    once, not added."""
    blocks: dict[str, list[tuple[Size, Size]]] = {}
    for g in groups.values():
        for m in g.members:
            # A transposed block covers rows: the weight's gradient is added up.
            blocks.setdefault(m.weight, []).append((Size.of(-1), Size()) if m.transposed
                                                   else m.cols)
    return {p.name for p in fwd.params if p.kind == MATRIX
            and _tiles(blocks.get(p.name, []), p.shape[1])}


def _tiles(cols: list[tuple[Size, Size]], n: Size) -> bool:
    """Whether the column ranges cover 0..n exactly once, for every binding
    of the sizes: each block starts where the one before it ends. (Forms do
    not sort; blocks that tile only when two sizes are equal do not count.)"""
    left, end = list(cols), Size()
    while left:
        following = next((c for c in left if c[0] == end), None)
        if following is None:
            return False
        left.remove(following)
        end = following[1]
    return end == n


def _forward_step(fwd: Graph, groups: dict[str, Group], taped: list[str], states: list[str],
                  output: str) -> StepPlan:
    prev = {f"{s}<t-1>" for s in states}
    stores = {f"{output}<t>": [Target(Ref("out"))]}
    for n in taped:
        if n not in prev:  # the state is taped before the step, from its own array
            stores.setdefault(n, []).append(Target(Ref("tape_", n)))
    reads_product = {}
    for e in fwd.eqns:
        if e.op in PRODUCTS:
            ops = tuple(p.name for p in e.args[1:] if not groups[p.name].hoisted)
            if ops:
                reads_product[e.out.name] = ops
    step_groups = [g for g in groups.values() if not g.hoisted]
    # The next step reads the new states from their buffers, and a product
    # reads an operand the step makes from its buffer (a state from its array);
    # values of parameters alone are made once, before the loop.
    return _schedule(fwd, {g.operand: fwd.vars()[g.operand] for g in step_groups}, stores,
                     keep={f"{s}<t>" for s in states}, reads_product=reads_product,
                     skip={e.out.name for e in fwd.eqns if e.out.kind == VECTOR},
                     materialise={g.operand for g in step_groups if g.operand not in prev})


def _backward_step(fwd: Graph, bwd: Graph, groups: dict[str, Group], roles: dict[str, tuple],
                   cotangents_in: dict[str, str], inputs: list[str], states: list[str],
                   outs: dict[str, Var], zeros: set[str]) -> StepPlan:
    stores: dict[str, list[Target]] = {}
    for g in groups.values():
        if cotangents_in[g.operand] == g.operand:
            for m in g.members:
                if m.grad:
                    stores.setdefault(m.grad, []).append(Target(Ref("dY_", g.operand), m.offset))
    for n in inputs:  # dx starts at zero: a gradient that is zero in the step needs no store
        if outs[n].name not in zeros:
            stores.setdefault(outs[n].name, []).append(Target(Ref("dx_", n)))
    reads_product = {}
    for e in bwd.eqns:
        ops = tuple(dict.fromkeys(roles[a.name][0] for a in e.args
                                  if isinstance(a, Var) and a.name in roles
                                  and not groups[roles[a.name][0]].hoisted))
        if ops:
            reads_product[e.out.name] = ops
    # Products and weight gradients are made by the group products; an input
    # gradient that is zero in the step comes from its product after the loop.
    skip = zeros & {outs[n].name for n in inputs} | {
        e.out.name for e in bwd.eqns if e.op in PART_GRADIENTS or e.op in WEIGHT_GRADIENTS
        or (e.out.kind in (MATRIX, VECTOR) and e.op != "bsum")}
    step_groups = [g for g in groups.values() if not g.hoisted]
    made_by = {n: op for n, (op, first) in roles.items() if first and not groups[op].hoisted}
    return _schedule(
        bwd, {g.operand: fwd.vars()[g.operand] for g in step_groups}, stores,
        keep={outs[f"{s}<t-1>"].name for s in states}, reads_product=reads_product,
        skip=skip, materialise=set(), zero=held_by_products(groups, roles),
        # The end of the step reads the products that make the states' gradients.
        at_end=tuple(roles[outs[f"{s}<t-1>"].name][0] for s in states
                     if outs[f"{s}<t-1>"].name in roles),
        # A product over dY_p needs every member's gradient stored; a gradient
        # that is itself another product's result is stored right after it.
        gemm_inputs={g.operand: [m.grad for m in g.members if m.grad] for g in step_groups},
        made_by_gemm=made_by)


def _schedule(graph: Graph, products: dict[str, Var], stores: dict[str, list[Target]],
              keep: set[str], reads_product: dict[str, tuple], skip: set[str],
              materialise: set[str], zero: set[str] = frozenset(), **order) -> StepPlan:
    """The step ordered into stages. StepCode (codegen.py) both orders a
    step and writes it; only its ordering runs here, with no names: all it
    asks of a value while ordering is whether it is a zero of the step,
    which needs no store (every target starts at zero)."""
    code = StepCode(graph, None, {}, lambda v: "K0" if v.name in zero else v.name, keep,
                    stores, reads_product, skip, materialise)
    code.schedule({op: Stage("gemm", var=v) for op, v in products.items()}, **order)
    return StepPlan(graph, code.stages, code.materialise, [v.name for v in code.buffers()],
                    stores)
