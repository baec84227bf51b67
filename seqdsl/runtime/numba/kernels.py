"""The generated module: `forward` and `backward` over whole sequences.

    forward(x, lengths, a0, c0, <params>) -> (out, a, c, <inputs>, <tapes>)
    backward(dout, da, dc, lengths, <inputs>, <tapes>, <params>)
        -> (dx, da0, dc0, <parameter gradients>)

`out` holds the output state at every step (zero past each length); the
inputs come back with their padding zeroed, and the tapes hold the forward
values the backward pass reads. Rows past an example's length are skipped,
so padding never reaches a gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import BATCH, MATRIX, VECTOR, Graph, Lit, Var, verify
from ...ir.passes import fold_zeros
from .codegen import (Names, Stage, StepCode, _Writer, comment, docstring, float_literal,
                      vector_prologue)
from .plan import attach_backward, product_groups

# From this batch size on, the backward step's product is made transposed:
# measured faster with OpenBLAS from B = 8 (and slower for B = 1).
TRANSPOSED_FROM_BATCH = 8
CHUNK_BYTES = 8 << 20  # the largest stacked weight a forward step's product takes whole

@dataclass
class Generated:
    source: str
    tapes: list[str]  # the forward values passed from forward to backward
    identifiers: frozenset[str] = frozenset()  # every name its Names handed out


def generate(cell: str, fwd: Graph, bwd: Graph, inputs: list[str], states: list[str],
             output: str, dtype: str, sizes: dict[str, int] | None = None) -> Generated:
    """Source text of the module for a cell specialised to sizes and dtype.
    Names from the spec reach it only as identifiers a `Names` made, or
    escaped in comments and the docstring; the spec's path not at all."""
    if not (dtype.isidentifier() and np.dtype(dtype).kind == "f"):
        raise ValueError(f"generated kernels are for a floating-point dtype, not {dtype!r}")
    py = Names()
    groups = product_groups(fwd, set(inputs))
    roles = attach_backward(groups, fwd, bwd)
    # Products hoisted out of the loop, and each member of a stacked product
    # but its first (which holds the whole product), are added in elsewhere.
    bwd = verify(fold_zeros(bwd, {n for n, (op, first) in roles.items()
                                  if groups[op].hoisted or not first}))
    roles = attach_backward(groups, fwd, bwd)  # a cotangent may now go by another name
    consts: dict[float, str] = {0.0: "K0", 1.0: "K1"}
    params = list(fwd.params)
    fwd_vars = fwd.vars()
    saved = [v.name for v in bwd.inputs[len(fwd.outputs):]]
    prev = {f"{s}<t-1>": s for s in states}
    # Forward values the backward pass reads, or that weight gradients need.
    operands = {g.operand for g in groups.values()}
    taped = [n for n in dict.fromkeys(saved + list(operands))
             if n not in inputs and fwd_vars[n].kind != VECTOR]

    def const(a: Lit) -> str:
        return consts.setdefault(float(a.value), f"K{len(consts)}")

    def common(a: Var):
        if a.kind == VECTOR:
            name = py(a.name) if a.name in {p.name for p in params} else py.role("vec_", a.name)
            return f"{name}[{{j}}]"
        if a.name in inputs:
            return f"{py.role('in_', a.name)}[_t, _b, {{j}}]"
        return None

    # ---- forward ---------------------------------------------------------------------
    def fsrc(a: Var) -> str:
        s = common(a)
        if s is not None:
            return s
        if a.name in prev:
            return f"{py.role('state_', prev[a.name])}[_b, {{j}}]"
        raise KeyError(a.name)

    def fslices(e):
        out, lo = [], 0
        w, *parts = e.args
        for p in parts:
            g = groups[p.name]
            cols = (lo, lo + p.size.value())
            lo = cols[1]
            m = next(m for m in g.members
                     if (m.linear, m.weight, m.cols) == (e.out.name, w.name, cols))
            where = "_t, _b" if g.hoisted else "_b"
            out.append(f"{py.role('P_', p.name)}[{where}, {m.offset} + _j]")
        return out

    fstores: dict[str, list[str]] = {f"{output}<t>": ["out[_t, _b, {j}]"]}
    for n in taped:
        if n not in prev:
            fstores.setdefault(n, []).append(f"{py.role('tape_', n)}[_t, _b, {{j}}]")
    gemm_before = {}
    for e in fwd.eqns:
        if e.op == "linear":
            ops = tuple(p.name for p in e.args[1:] if not groups[p.name].hoisted)
            if ops:
                gemm_before[e.out.name] = ops
    step_groups = [g for g in groups.values() if not g.hoisted]
    fcode = StepCode(fwd, py, consts, fsrc, keep={f"{s}<t>" for s in states}, stores=fstores,
                     gemm_before=gemm_before, skip={e.out.name for e in fwd.eqns
                                                    if e.out.kind == VECTOR},
                     materialise={g.operand for g in step_groups if g.operand not in prev})
    fcode.args_of = lambda e, local: fslices(e) if e.op == "linear" else None
    gemms = {}
    for g in step_groups:
        op = g.operand
        arr = py.role("state_", prev[op]) if op in prev else py.role("buf_", op)
        gemms[op] = Stage("gemm", lines=[
            comment(f"{op} times " + " | ".join(
                f"{m.weight}[:, {m.cols[0]}:{m.cols[1]}]ᵀ" for m in g.members)
                + ": one product for all its blocks, made transposed (the"),
            "# orientation OpenBLAS runs fastest), then laid out batch-major",
            *_product_in_chunks(py.role("ST_", op), f"{arr}.T", py.role("PT_", op), g.width,
                                g.width * g.size * np.dtype(dtype).itemsize),
            *_transpose(py.role("PT_", op), py.role("P_", op), g.width)])
    fcode.schedule(gemms)

    in_args = [py(n) for n in inputs]
    s_args = [py.role("", s, "0") for s in states]
    p_args = [py(p.name) for p in params]
    w = _Writer()
    w("@njit(cache=True, error_model='numpy')")
    with w.block(f"def forward({', '.join(in_args + ['lengths'] + s_args + p_args)}):"):
        w(f"_T, _B = {in_args[0]}.shape[0], {in_args[0]}.shape[1]")
        for n in inputs:
            size = fwd_vars[n].size.value()
            w(comment(f"{n} with its padding zeroed, so no product ever reads it"))
            w(f"{py.role('in_', n)} = {py(n)}")
            with w.block("if lengths.min() < _T:"):
                w(f"{py.role('in_', n)} = np.zeros((_T, _B, {size}), DT)")
                with w.block("for _b in range(_B):"):
                    with w.block("for _t in range(lengths[_b]):"):
                        with w.block(f"for _k in range({size}):"):
                            w(f"{py.role('in_', n)}[_t, _b, _k] = {py(n)}[_t, _b, _k]")
        vector_prologue(fwd, py, const, w, fsrc)
        _stacked_weights(w, groups.values(), py, transposed=True)
        for g in groups.values():
            shape = f"(_B, {g.width})"
            if g.hoisted:
                w(comment(f"{g.operand} for all steps at once, times every block applied to it"))
                w(f"{py.role('P_', g.operand)} = np.dot({py.role('in_', g.operand)}"
                  f".reshape((_T * _B, {g.size})), {py.role('ST_', g.operand)}.T)"
                  f".reshape((_T, _B, {g.width}))")
            else:
                w(f"{py.role('P_', g.operand)} = np.empty({shape}, DT)")
                w(f"{py.role('PT_', g.operand)} = np.empty(({g.width}, _B), DT)")
        for s, a in zip(states, s_args):
            w(f"{py.role('state_', s)} = {a}.copy()")
        for v in fcode.buffers():
            w(f"{py.role('buf_', v.name)} = np.zeros((_B, {v.size.value()}), DT)")
        for n in taped:
            # Rows past a length stay zero where a weight gradient's product reads them.
            _alloc_steps(w, py.role("tape_", n), fwd_vars[n].size.value(),
                         zero_padding=n in operands and n not in prev)
        _alloc_steps(w, "out", fwd_vars[f"{output}<t>"].size.value(), zero_padding=True)
        with w.block("for _t in range(_T):"):
            for n in taped:
                if n in prev:
                    with w.block("for _b in range(_B):"):
                        with w.block(f"for _k in range({fwd_vars[n].size.value()}):"):
                            w(f"{py.role('tape_', n)}[_t, _b, _k] = "
                              f"{py.role('state_', prev[n])}[_b, _k]")
            fcode.write(w, "_t < lengths[_b]")
            with w.block("for _b in range(_B):"):
                with w.block("if _t < lengths[_b]:"):
                    for s in states:
                        with w.block(f"for _k in range({fwd_vars[s + '<t-1>'].size.value()}):"):
                            w(f"{py.role('state_', s)}[_b, _k] = "
                              f"{py.role('buf_', s + '<t>')}[_b, _k]")
        rets = (["out"] + [py.role("state_", s) for s in states]
                + [py.role("in_", n) for n in inputs] + [py.role("tape_", n) for n in taped])
        w(f"return {', '.join(rets)}")

    # ---- backward --------------------------------------------------------------------
    seeds = {f"d_{s}<t>": s for s in states}

    def bsrc(a: Var) -> str:
        s = common(a)
        if s is not None:
            return s
        if a.name in seeds:
            s = seeds[a.name]
            extra = " + dout[_t, _b, {j}]" if s == output else ""
            return f"({py.role('gstate_', s)}[_b, {{j}}]{extra})"
        if a.name in roles:
            op, first = roles[a.name]
            if groups[op].hoisted or not first:
                return "K0"  # the group's product holds it (after the loop for inputs)
            return f"{py.role('dP_', op)}[_b, {{j}}]"
        if a.name in fwd_vars:
            return f"{py.role('tape_', a.name)}[_t, _b, {{j}}]"
        raise KeyError(a.name)

    # Groups whose blocks belong to the same products in the same order (the
    # a<t-1> and x groups of an LSTM) hold the same cotangents: one dY serves both.
    dy = {}
    for g in groups.values():
        layout = tuple((m.linear, m.offset, m.rows) for m in g.members)
        dy[g.operand] = next((dy[h.operand] for h in groups.values() if h.operand in dy and
                              tuple((m.linear, m.offset, m.rows) for m in h.members) == layout),
                             py.role("dY_", g.operand))
    bstores: dict[str, list[str]] = {}
    for g in groups.values():
        if dy[g.operand] != py.role("dY_", g.operand):
            continue  # shares another group's dY
        for m in g.members:
            if m.grad:
                bstores.setdefault(m.grad, []).append(
                    f"{dy[g.operand]}[_t, _b, {m.offset} + {{j}}]")
    outs = dict(zip([v.name for v in fwd.inputs + fwd.params], bwd.outputs))
    zero = {e.out.name for e in bwd.eqns if e.op == "zeros" and e.out.kind == BATCH}
    for n in inputs:  # dx starts at zero: a gradient that is zero in the step needs no store
        if outs[n].name not in zero:
            bstores.setdefault(outs[n].name, []).append(f"{py.role('dx_', n)}[_t, _b, {{j}}]")
    bgemm_before = {}
    for e in bwd.eqns:
        ops = tuple(dict.fromkeys(roles[a.name][0] for a in e.args
                                  if isinstance(a, Var) and a.name in roles
                                  and not groups[roles[a.name][0]].hoisted))
        if ops:
            bgemm_before[e.out.name] = ops
    bskip = zero & {outs[n].name for n in inputs} | {
        e.out.name for e in bwd.eqns if e.op in ("linear_t", "outer")
             or (e.out.kind in (MATRIX, VECTOR) and e.op != "bsum")}
    bcode = StepCode(bwd, py, consts, bsrc, keep={outs[f"{s}<t-1>"].name for s in states},
                     stores=bstores, gemm_before=bgemm_before, skip=bskip, materialise=set())
    bcode.args_of = lambda e, local: None

    def bgemm(g) -> Stage:
        op, dp, dpt = g.operand, py.role("dP_", g.operand), py.role("dPT_", g.operand)
        return Stage("gemm", lines=[
            comment(f"d {op} from every block applied to it: one product; for a"),
            "# batch of some size, made transposed (faster in OpenBLAS) and laid out back",
            f"if _B >= {TRANSPOSED_FROM_BATCH}:",
            f"    np.dot({py.role('S_', op)}, {dy[op]}[_t].T, {dpt})",
            *("    " + line for line in _transpose(dpt, dp, g.size)),
            "else:",
            f"    np.dot({dy[op]}[_t], {py.role('ST_', op)}, {dp})"])
    bgemms = {g.operand: bgemm(g) for g in step_groups}
    ends = tuple(roles[outs[f"{s}<t-1>"].name][0] for s in states
                 if outs[f"{s}<t-1>"].name in roles)
    # A product over dY_p needs every member's gradient stored; a gradient that
    # is itself another product's result is stored right after that product.
    made_by = {n: op for n, (op, first) in roles.items() if first and not groups[op].hoisted}
    needs = {g.operand: [m.grad for m in g.members if m.grad] for g in step_groups}
    bcode.schedule(bgemms, at_end=ends, gemm_inputs=needs, made_by_gemm=made_by)

    bsums = [e for e in bwd.eqns if e.op == "bsum"]
    w()
    w()
    w("@njit(cache=True, error_model='numpy')")
    d_args = ["dout"] + [py.role("d", s) for s in states]
    tape_args = [py.role("in_", n) for n in inputs] + [py.role("tape_", n) for n in taped]
    with w.block(f"def backward({', '.join(d_args + ['lengths'] + tape_args + p_args)}):"):
        w("_T, _B = dout.shape[0], dout.shape[1]")
        vector_prologue(fwd, py, const, w, fsrc)
        # A step product needs only the stacking its batch size's orientation reads.
        _stacked_weights(w, [g for g in groups.values() if g.hoisted], py, transposed=True)
        if step_groups:
            with w.block(f"if _B >= {TRANSPOSED_FROM_BATCH}:"):
                _stacked_weights(w, step_groups, py, transposed=False)
                for g in step_groups:
                    w(f"{py.role('ST_', g.operand)} = np.empty((0, 0), DT)")
            with w.block("else:"):
                _stacked_weights(w, step_groups, py, transposed=True)
                for g in step_groups:
                    w(f"{py.role('S_', g.operand)} = np.empty((0, 0), DT)")
        for s in states:
            w(f"{py.role('gstate_', s)} = {py.role('d', s)}.copy()")
        # An input whose gradient is all in its hoisted product gets it from that product.
        by_product = {n for n in inputs if outs[n].name in zero and n in groups}
        for n in inputs:
            if n not in by_product:
                w(f"{py.role('dx_', n)} = np.zeros((_T, _B, {fwd_vars[n].size.value()}), DT)")
        made = {e.out.name for e in bwd.eqns}
        for g in groups.values():
            if dy[g.operand] == py.role("dY_", g.operand):
                # Written at every active row when each block's gradient is made in the step.
                full = all(m.grad in made and m.grad not in zero for m in g.members)
                _alloc_steps(w, py.role("dY_", g.operand), g.width, zero_padding=True,
                             zero_all=not full)
            if not g.hoisted:
                w(f"{py.role('dP_', g.operand)} = np.empty((_B, {g.size}), DT)")
                w(f"{py.role('dPT_', g.operand)} = np.empty(({g.size}, _B), DT)")
        for e in bsums:
            w(f"{py.role('acc_', e.out.name)} = np.zeros({e.out.size.value()}, DT)")
        for v in bcode.buffers():
            w(f"{py.role('buf_', v.name)} = np.zeros((_B, {v.size.value()}), DT)")
        with w.block("for _t in range(_T - 1, -1, -1):"):
            bcode.write(w, "_t < lengths[_b]")
            with w.block("for _b in range(_B):"):
                with w.block("if _t < lengths[_b]:"):
                    for s in states:
                        res = outs[f"{s}<t-1>"]
                        value = (f"{py.role('buf_', res.name)}[_b, _k]"
                                 if res.name in bcode.materialise else bsrc(res).format(j="_k"))
                        with w.block(f"for _k in range({res.size.value()}):"):
                            w(f"{py.role('gstate_', s)}[_b, _k] = {value}")
        w("# after the loop: products over all steps at once")
        for g in groups.values():
            if g.hoisted:
                n = g.operand
                w(f"{py.role('dx_', n)} {'=' if n in by_product else '+='} np.dot("
                  f"{dy[n]}.reshape((_T * _B, {g.width})), "
                  f"{py.role('ST_', n)}).reshape((_T, _B, {g.size}))")
        # Each block of a weight is written once, unless the weight is shared.
        blocks: dict[str, list[tuple[int, int]]] = {}
        for g in groups.values():
            for m in g.members:
                blocks.setdefault(m.weight, []).append(m.cols)
        assign = {p.name for p in params if p.kind == MATRIX
                  and _tiles(blocks.get(p.name, []), p.shape[1].value())}
        for p in params:
            if p.kind == MATRIX:
                alloc = "empty" if p.name in assign else "zeros"
                w(f"{py.role('d_', p.name)} = np.{alloc}(({p.shape[0].value()}, "
                  f"{p.shape[1].value()}), DT)")
        for g in groups.values():
            src = (py.role("in_", g.operand) if g.hoisted else py.role("tape_", g.operand))
            w(f"dS = np.dot({dy[g.operand]}.reshape((_T * _B, {g.width})).T, "
              f"{src}.reshape((_T * _B, {g.size})))")
            for m in g.members:
                op = "=" if m.weight in assign else "+="
                with w.block(f"for _i in range({m.rows}):"):
                    with w.block(f"for _k in range({m.cols[1] - m.cols[0]}):"):
                        w(f"{py.role('d_', m.weight)}[_i, {m.cols[0]} + _k] {op} "
                          f"dS[{m.offset} + _i, _k]")
        for e in bsums:
            w(f"{py.role('vec_', e.out.name)} = {py.role('acc_', e.out.name)}")
        vector_prologue(bwd, py, const, w, bsrc)
        grads = []
        for p in params:
            if p.kind == MATRIX:
                grads.append(py.role("d_", p.name))
            else:
                grads.append(py.role("vec_", outs[p.name].name))
        rets = ([py.role("dx_", n) for n in inputs] + [py.role("gstate_", s) for s in states]
                + grads)
        w(f"return {', '.join(rets)}")

    sizes_text = ", ".join(f"{k}={v}" for k, v in (sizes or {}).items())
    head = [docstring(f"cell {cell} ({sizes_text}, {dtype}), generated by seqdsl"),
            "import numpy as np", "from numba import njit", "",
            "from seqdsl.runtime.numba.activations import sigmoid, tanh", "",
            f"DT = np.{dtype}"]
    head += [f"{name} = DT({float_literal(value)})" for value, name in consts.items()]
    return Generated("\n".join(head + ["", ""] + w.lines) + "\n", taped, frozenset(py.used))


def _alloc_steps(w: _Writer, name: str, size: int, zero_padding: bool,
                 zero_all: bool = False) -> None:
    """A (T, B, size) array; zero where no step writes it (past each length)
    when `zero_padding`, or everywhere when `zero_all`."""
    if zero_all:
        w(f"{name} = np.zeros((_T, _B, {size}), DT)")
        return
    w(f"{name} = np.empty((_T, _B, {size}), DT)")
    if zero_padding:
        with w.block("if lengths.min() < _T:"):
            with w.block("for _b in range(_B):"):
                with w.block("for _t in range(lengths[_b], _T):"):
                    with w.block(f"for _k in range({size}):"):
                        w(f"{name}[_t, _b, _k] = K0")


def _product_in_chunks(w: str, x: str, out: str, rows: int, nbytes: int) -> list[str]:
    """Lines for out = w @ x; a w larger than CHUNK_BYTES is applied a block
    of rows at a time (with OpenBLAS at 16 MiB: 13–18% faster alone, 2–3% in
    a whole LSTM forward)."""
    chunks = -(-nbytes // CHUNK_BYTES)
    if chunks <= 1:
        return [f"np.dot({w}, {x}, {out})"]
    step = -(-rows // chunks)
    return [f"for _c in range(0, {rows}, {step}):",
            f"    np.dot({w}[_c:_c + {step}], {x}, {out}[_c:_c + {step}])"]


def _transpose(src: str, dst: str, n: int) -> list[str]:
    """Lines copying src (n, B) into dst (B, n)."""
    return ["for _b in range(_B):",
            f"    for _k in range({n}):",
            f"        {dst}[_b, _k] = {src}[_k, _b]"]


def _tiles(cols: list[tuple[int, int]], n: int) -> bool:
    """Whether the column ranges cover 0..n exactly once."""
    end = 0
    for lo, hi in sorted(cols):
        if lo != end:
            return False
        end = hi
    return end == n


def _stacked_weights(w: _Writer, groups, py, transposed: bool) -> None:
    """ST_p = [W1[:, cols]; W2[:, cols]; ...], the blocks applied to operand
    p stacked by rows (`transposed`), or its transpose S_p; built per call.
    Explicit loops: Numba compiles a slice assignment as a general copy
    routine per array type, which costs seconds of compile time."""
    for g in groups:
        name = py.role("ST_" if transposed else "S_", g.operand)
        shape = f"({g.width}, {g.size})" if transposed else f"({g.size}, {g.width})"
        w(f"{name} = np.empty({shape}, DT)")
        for m in g.members:
            src = f"{py(m.weight)}[_i, {m.cols[0]} + _k]"
            cols = m.cols[1] - m.cols[0]
            if transposed:
                with w.block(f"for _i in range({m.rows}):"):
                    with w.block(f"for _k in range({cols}):"):
                        w(f"{name}[{m.offset} + _i, _k] = {src}")
            else:  # in blocks of 16 rows of W, so each cache line read is used whole
                with w.block(f"for _i0 in range(0, {m.rows}, 16):"):
                    with w.block(f"for _k in range({cols}):"):
                        with w.block(f"for _i in range(_i0, min(_i0 + 16, {m.rows})):"):
                            w(f"{name}[_k, {m.offset} + _i] = {src}")
