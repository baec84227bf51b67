"""The `backward` kernel, written from the plan:

    backward(n_H, n_X, dout, da, dc, lengths, <inputs>, <tapes>, <params>)
        -> (dx, da0, dc0, <parameter gradients>)

It runs the steps from the last to the first; rows past an example's
length are skipped, so padding never reaches a gradient. Products over all
steps (input gradients of hoisted groups, every weight gradient) come after
the loop.
"""
from __future__ import annotations

from ...ir.graph import MATRIX, Var
from .codegen import JIT, Stage, StepCode, comment, vector_prologue
from .emit import Emission, alloc_steps, stacked_weights, transpose, unstack_gradient
from .kernel_plan import Ref
from .plan import Group


def emit_backward(em: Emission) -> None:
    plan, w = em.plan, em.w
    source = _source(em)
    code = em.step_writer(plan.backward, source, lambda g: _product(em, g))
    staged = _stage_stacked_stores(em, code)
    w()
    w()
    w(JIT)
    with w.block(f"def backward({em.names(plan.backward_args)}):"):
        w("_T, _B = dout.shape[0], dout.shape[1]")
        vector_prologue(plan.forward.graph, em.py, em.const, w, em.shared_source)
        _stacked_weights(em)
        _allocate(em)
        for name in staged:
            w(f"{em.py.role('y_', name)} = empty((_B, {em.size_of_backward(name)}), DT)")
        _time_loop(em, code, source)
        w("# after the loop: products over all steps at once")
        _input_products(em)
        _weight_gradients(em)
        for n in plan.accumulated:
            w(f"{em.py.role('vec_', n)} = {em.py.role('acc_', n)}")
        vector_prologue(plan.backward.graph, em.py, em.const, w, source)
        w(f"return {em.names(plan.backward_returns)}")


def _source(em: Emission):
    """How the backward step reads a value it does not compute: a state's
    cotangent from its array (plus `dout` for the output), a product from
    its group's product, a forward value from its tape."""
    plan, py = em.plan, em.py
    seeds = {f"d_{s}<t>": s for s in plan.states}

    def source(a: Var) -> str:
        s = em.shared_source(a)
        if s is not None:
            return s
        if a.name in seeds:
            s = seeds[a.name]
            extra = " + dout[_t, _b, {j}]" if s == plan.output else ""
            return f"({py.role('gstate_', s)}[_b, {{j}}]{extra})"
        if a.name in plan.held:
            return "K0"  # the group's product holds it (after the loop for inputs)
        if a.name in plan.product_results:
            return f"{py.role('dP_', plan.product_results[a.name])}[_b, {{j}}]"
        if a.name in em.fwd_vars:
            return f"{py.role('tape_', a.name)}[_t, _b, {{j}}]"
        raise KeyError(a.name)
    return source


def _dy(em: Emission, operand: str) -> str:
    """The array of the cotangents of a group's blocks, maybe shared."""
    return em.name(Ref("dY_", em.plan.cotangents_in[operand]))


def _product(em: Emission, g: Group) -> list[str]:
    """The lines of a group's step product."""
    py, op = em.py, g.operand
    dp, dpt = py.role("dP_", op), py.role("dPT_", op)
    return [comment(f"d {op} from every block applied to it: one product, over the"),
            "# weights packed before the loop where that is faster; else, for a batch of",
            "# some size, made transposed (faster in OpenBLAS) and laid out back",
            f"if {py.role('PK_', op)}.shape[0]:",
            f"    packed_product({py.role('PK_', op)}, {_dy(em, op)}[_t], {dp}, "
            f"{py.role('PW_', op)})",
            f"elif _B >= {em.plan.transposed_from_batch}:",
            f"    dot_into({py.role('S_', op)}, {_dy(em, op)}[_t].T, {dpt})",
            *("    " + line for line in transpose(dpt, dp)),
            "else:",
            f"    dot_into({_dy(em, op)}[_t], {py.role('ST_', op)}, {dp})"]


def _stage_stacked_stores(em: Emission, code: StepCode) -> list[str]:
    """Where one dY array receives several gradients, each at its block's
    offset (n_H + _j, 2 * n_H + _j, ...), the step writes them to buffers of
    their own and copies them into dY after the stage that makes them: LLVM
    cannot tell stores a run-time distance apart in one array, and leaves a
    loop holding them scalar (the LSTM's backward is 6-7% faster so: B=32,
    H=128 and 256, one thread, runs interleaved). Returns the values so
    staged."""
    plan, py = em.plan, em.py
    per_array: dict[str, int] = {}
    for targets in plan.backward.stores.values():
        for t in targets:
            if t.array.role == "dY_":
                per_array[em.name(t.array)] = per_array.get(em.name(t.array), 0) + 1
    staged: dict[str, list[str]] = {}  # value -> the dY targets it is copied to
    for name, targets in plan.backward.stores.items():
        for i, t in enumerate(targets):
            if t.array.role == "dY_" and per_array[em.name(t.array)] > 1:
                staged.setdefault(name, []).append(code.stores[name][i])
                code.stores[name][i] = f"{py.role('y_', name)}[_b, {{j}}]"
    if not staged:
        return []
    stages = []
    for st in code.stages:
        stages.append(st)
        made = [st.var.name] if st.kind == "store" else [e.out.name for e in st.eqns]
        copies = [n for n in made if n in staged]
        if copies and st.kind != "gemm":  # a "gemm" stage's lines are written as given
            stages.append(Stage("gemm", lines=_copy_lines(em, copies, staged)))
    code.use_stages(stages)
    return list(staged)


def _copy_lines(em: Emission, names: list[str], staged: dict[str, list[str]]) -> list[str]:
    lines = ["for _b in range(_B):", "    if _t < lengths[_b]:"]
    for n in names:
        lines.append(f"        for _j in range({em.size_of_backward(n)}):")
        for target in staged[n]:
            lines.append(f"            {target.format(j='_j')} = {em.py.role('y_', n)}[_b, _j]")
    return [comment(", ".join(names) + ": into their blocks of dY, copied from buffers of their"),
            "# own (a loop storing at run-time offsets of one array is not vectorised)"] + lines


def _stacked_weights(em: Emission) -> None:
    """A step product needs only the stacking its batch size's orientation
    reads; the other is left empty. Either is packed where the products over
    it run packed (packed.py)."""
    plan, w, py = em.plan, em.w, em.py
    stacked_weights(em, [g for g in plan.groups.values() if g.hoisted], transposed=True)
    if not plan.step_groups:
        return
    with w.block(f"if _B >= {plan.transposed_from_batch}:"):
        stacked_weights(em, plan.step_groups, transposed=False)
        for g in plan.step_groups:
            w(f"{py.role('ST_', g.operand)} = empty((0, 0), DT)")
            w(f"{py.role('PK_', g.operand)} = "
              f"packed_for_steps({py.role('S_', g.operand)}, _B, _T, False)")
    with w.block("else:"):
        stacked_weights(em, plan.step_groups, transposed=True)
        for g in plan.step_groups:
            w(f"{py.role('S_', g.operand)} = empty((0, 0), DT)")
            w(f"{py.role('PK_', g.operand)} = "
              f"packed_for_steps({py.role('ST_', g.operand)}, _B, _T, True)")
    for g in plan.step_groups:
        w(f"{py.role('PW_', g.operand)} = packed_work({py.role('PK_', g.operand)}, _B)")


def _allocate(em: Emission) -> None:
    plan, w, py = em.plan, em.w, em.py
    for s in plan.states:
        w(f"{py.role('gstate_', s)} = {py.role('d', s)}.copy()")
    for n in plan.inputs:
        if n not in plan.grad_from_product:
            w(f"{py.role('dx_', n)} = zeros((_T, _B, {em.size(n)}), DT)")
    for g in plan.groups.values():
        if plan.cotangents_in[g.operand] == g.operand:
            alloc_steps(w, _dy(em, g.operand), py.size(g.width), zero_padding=True,
                        zero_all=g.operand in plan.dy_zeroed)
        if not g.hoisted:
            w(f"{py.role('dP_', g.operand)} = empty((_B, {py.size(g.size)}), DT)")
            w(f"{py.role('dPT_', g.operand)} = empty(({py.size(g.size)}, _B), DT)")
    bwd_vars = plan.backward.graph.vars()
    for n in plan.accumulated:
        w(f"{py.role('acc_', n)} = zeros({py.size(bwd_vars[n].size)}, DT)")
    for n in plan.backward.buffers:
        w(f"{py.role('buf_', n)} = zeros((_B, {py.size(bwd_vars[n].size)}), DT)")


def _time_loop(em: Emission, code: StepCode, source) -> None:
    plan, w, py = em.plan, em.w, em.py
    bwd_vars = plan.backward.graph.vars()
    with w.block("for _t in range(_T - 1, -1, -1):"):
        code.write(w, "_t < lengths[_b]")
        with w.block("for _b in range(_B):"):
            with w.block("if _t < lengths[_b]:"):
                for s in plan.states:
                    res = bwd_vars[plan.state_grads[s]]
                    value = (f"{py.role('buf_', res.name)}[_b, _k]"
                             if res.name in plan.backward.materialise
                             else source(res).format(j="_k"))
                    with w.block(f"for _k in range({py.size(res.size)}):"):
                        w(f"{py.role('gstate_', s)}[_b, _k] = {value}")


def _input_products(em: Emission) -> None:
    """Each hoisted group's product gives its input's gradient (or the part
    of it the step does not make) for all steps at once."""
    plan, w, py = em.plan, em.w, em.py
    for g in plan.groups.values():
        if g.hoisted:
            n = g.operand
            w(f"{py.role('dx_', n)} {'=' if n in plan.grad_from_product else '+='} dot("
              f"{_dy(em, n)}.reshape((_T * _B, {py.size(g.width)})), "
              f"{py.role('ST_', n)}).reshape((_T, _B, {py.size(g.size)}))")


def _weight_gradients(em: Emission) -> None:
    """One product per group over all steps, each of its blocks copied into
    its weight's gradient; a shared weight's blocks are added up."""
    plan, w, py = em.plan, em.w, em.py
    for p in plan.params:
        if p.kind == MATRIX:
            alloc = "empty" if p.name in plan.assigned_weights else "zeros"
            w(f"{py.role('d_', p.name)} = {alloc}(({py.size(p.shape[0])}, "
              f"{py.size(p.shape[1])}), DT)")
    for g in plan.groups.values():
        src = py.role("in_", g.operand) if g.hoisted else py.role("tape_", g.operand)
        w(f"dS = dot({_dy(em, g.operand)}.reshape((_T * _B, {py.size(g.width)})).T, "
          f"{src}.reshape((_T * _B, {py.size(g.size)})))")
        for m in g.members:
            w(unstack_gradient(em, "dS", m, add=m.weight not in plan.assigned_weights))
