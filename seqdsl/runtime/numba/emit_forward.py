"""The `forward` kernel, written from the plan:

    forward(n_H, n_X, x, lengths, a0, c0, <params>) -> (out, a, c, <inputs>, <tapes>)

`n_H`, `n_X` are the values of the size symbols (every size in the kernel is
written over them); `out` holds the output state at every step (zero past each length); the
inputs come back with their padding zeroed, and the tapes hold the forward
values the backward pass reads.
"""
from __future__ import annotations

from ...ir.graph import Eqn, Var
from ...ir.ops.base import plus
from .codegen import JIT, StepCode, comment, vector_prologue
from .emit import Emission, alloc_steps, stacked_weights, transpose
from .plan import PRODUCTS, Group


def emit_forward(em: Emission) -> None:
    plan, w = em.plan, em.w
    code = em.step_writer(plan.forward, _source(em), lambda g: _product(em, g))
    code.args_of = lambda e, local: _slices(em, e) if e.op in PRODUCTS else None
    w(JIT)
    with w.block(f"def forward({em.names(plan.forward_args)}):"):
        first = em.name(plan.forward_args[len(plan.sizes)])  # the first input
        w(f"_T, _B = {first}.shape[0], {first}.shape[1]")
        _clean_inputs(em)
        vector_prologue(plan.forward.graph, em.py, em.const, w, _source(em))
        stacked_weights(em, plan.groups.values(), transposed=True)
        _block_rows(em)
        _allocate(em)
        _time_loop(em, code)
        w(f"return {em.names(plan.forward_returns)}")


def _source(em: Emission):
    """How the forward step reads a value it does not compute: the previous
    states from their arrays."""
    prev = {f"{s}<t-1>": s for s in em.plan.states}

    def source(a: Var) -> str:
        s = em.shared_source(a)
        if s is not None:
            return s
        if a.name in prev:
            return f"{em.py.role('state_', prev[a.name])}[_b, {{j}}]"
        raise KeyError(a.name)
    return source


def _product(em: Emission, g: Group) -> list[str]:
    """The lines of a group's step product."""
    py, op = em.py, g.operand
    prev = {f"{s}<t-1>": s for s in em.plan.states}
    arr = py.role("state_", prev[op]) if op in prev else py.role("buf_", op)
    st, pt, rows = py.role("ST_", op), py.role("PT_", op), py.role("rows_", op)
    pk, pw, p = py.role("PK_", op), py.role("PW_", op), py.role("P_", op)
    return [comment(f"{op} times " + " | ".join(m.block() for m in g.members)
                + ": one product for all its blocks, over"),
            f"# {st} packed before the loop where that is faster, else made transposed (the",
            f"# orientation OpenBLAS runs fastest), {rows} rows of {st} at a time, then laid",
            "# out batch-major",
            f"if {pk}.shape[0]:",
            f"    packed_product({pk}, {arr}, {p}, {pw})",
            "else:",
            f"    for _c in range(0, {py.size(g.width)}, {rows}):",
            f"        dot_into({st}[_c:_c + {rows}], {arr}.T, {pt}[_c:_c + {rows}])",
            *("    " + line for line in transpose(pt, p))]


def _block_rows(em: Emission) -> None:
    """How many rows of each stacked weight a step product applies at a
    time: all of a small weight; as few blocks as keep each under the
    plan's bound for a large one (with OpenBLAS at 16 MiB: 13–18% faster
    alone, 2–3% in a whole LSTM forward). Worked out here, as the sizes are
    only known at run time."""
    w, py = em.w, em.py
    if not em.plan.step_groups:
        return
    w(f"# a stacked weight of over {_bytes(em.plan.chunk_bytes)} is applied a block of rows at "
      "a time")
    w("# (faster in OpenBLAS): as few blocks as that allows, of equal rows")
    for g in em.plan.step_groups:
        st = py.role("ST_", g.operand)
        w(f"{py.role('rows_', g.operand)} = "
          f"-(-{st}.shape[0] // -(-{st}.nbytes // {em.plan.chunk_bytes}))")
    w("# packed for the step products where that is faster (packed.py; else empty)")
    for g in em.plan.step_groups:
        st = py.role("ST_", g.operand)
        w(f"{py.role('PK_', g.operand)} = packed_for_steps({st}, _B, _T, False)")
        w(f"{py.role('PW_', g.operand)} = packed_work({py.role('PK_', g.operand)}, _B)")


def _bytes(n: int) -> str:
    return f"{n >> 20} MiB" if n and n % (1 << 20) == 0 else f"{n} bytes"


def _slices(em: Emission, e: Eqn) -> list[str]:
    """A linear's terms: its block of each product of its operands."""
    terms = []
    for op, offset in em.plan.slices[e.out.name]:
        where = "_t, _b" if em.plan.groups[op].hoisted else "_b"
        terms.append(f"{em.py.role('P_', op)}[{where}, {plus(em.py.size(offset), '_j')}]")
    return terms


def _clean_inputs(em: Emission) -> None:
    w, py = em.w, em.py
    for n in em.plan.inputs:
        size = em.size(n)
        w(comment(f"{n} with its padding zeroed, so no product ever reads it"))
        w(f"{py.role('in_', n)} = {py(n)}")
        with w.block("if shortest(lengths) < _T:"):
            w(f"{py.role('in_', n)} = zeros((_T, _B, {size}), DT)")
            with w.block("for _b in range(_B):"):
                with w.block("for _t in range(lengths[_b]):"):
                    with w.block(f"for _k in range({size}):"):
                        w(f"{py.role('in_', n)}[_t, _b, _k] = {py(n)}[_t, _b, _k]")


def _allocate(em: Emission) -> None:
    """Products, states, buffers, tapes and `out`, before the loop; the
    products of inputs are made here, for all steps at once."""
    plan, w, py = em.plan, em.w, em.py
    for g in plan.groups.values():
        if g.hoisted:
            w(comment(f"{g.operand} for all steps at once, times every block applied to it"))
            w(f"{py.role('P_', g.operand)} = dot({py.role('in_', g.operand)}"
              f".reshape((_T * _B, {py.size(g.size)})), {py.role('ST_', g.operand)}.T)"
              f".reshape((_T, _B, {py.size(g.width)}))")
        else:
            w(f"{py.role('P_', g.operand)} = empty((_B, {py.size(g.width)}), DT)")
            w(f"{py.role('PT_', g.operand)} = empty(({py.size(g.width)}, _B), DT)")
    for s in plan.states:
        w(f"{py.role('state_', s)} = {py.role('', s, '0')}.copy()")
    for n in plan.forward.buffers:
        w(f"{py.role('buf_', n)} = zeros((_B, {em.size(n)}), DT)")
    for n in plan.taped:
        # Rows past a length stay zero where a weight gradient's product reads them.
        alloc_steps(w, py.role("tape_", n), em.size(n), zero_padding=n in plan.zero_padded_tapes)
    alloc_steps(w, "out", em.size(f"{plan.output}<t>"), zero_padding=True)


def _time_loop(em: Emission, code: StepCode) -> None:
    plan, w, py = em.plan, em.w, em.py
    prev = {f"{s}<t-1>": s for s in plan.states}
    with w.block("for _t in range(_T):"):
        for n in plan.taped:
            if n in prev:
                with w.block("for _b in range(_B):"):
                    with w.block(f"for _k in range({em.size(n)}):"):
                        w(f"{py.role('tape_', n)}[_t, _b, _k] = "
                          f"{py.role('state_', prev[n])}[_b, _k]")
        code.write(w, "_t < lengths[_b]")
        with w.block("for _b in range(_B):"):
            with w.block("if _t < lengths[_b]:"):
                for s in plan.states:
                    with w.block(f"for _k in range({em.size(s + '<t-1>')}):"):
                        w(f"{py.role('state_', s)}[_b, _k] = {py.role('buf_', s + '<t>')}[_b, _k]")
