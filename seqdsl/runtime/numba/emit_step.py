"""Python source for a network's whole training step on the numba backend:
the loss over its heads and the gradient of every parameter, as one
compiled function,

    loss_and_grad(<kernel addresses>, <inputs>, <lengths>, <params>,
                  <per head: labelled rows' steps, examples, targets, weight>)
        -> (<per head: loss terms>, <per parameter: gradient>)

that runs what `Network.loss_and_grad` runs between its checks, in the same
order and with the same arithmetic: each layer's token lookups and its
cell's generated forward, each head's loss rows and their derived backward
(the generated row kernels), the rows' gradients scattered back, each
cell's generated backward, the gradients assembled per parameter. The
kernels are called by address (call.py), so this function compiles only its
own code. Nothing from the spec is written as code except through one
`Names`: parameters, sequences and heads become identifiers; their IR names
appear only in comments.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .codegen import JIT, Names, _Writer, comment, docstring
from .step_plan import BiPart, CellPart, HeadPart, Kernel, StepPlan

# What the generated module itself names, reserved before any spec name.
STEP_NAMES = ("sys", "call_at", "kernel_type", "gather_into", "add_by_id_into", "loss_and_grad",
              "DT", "_i", "_k", "_t", "_b", "_s")


@dataclass
class StepSource:
    source: str
    signature: str


def generate_step(plan: StepPlan, dtype: str) -> StepSource:
    return _Step(plan, dtype).write()


class _Step:
    def __init__(self, plan: StepPlan, dtype: str):
        self.plan, self.dtype = plan, dtype
        self.py = Names()
        for n in STEP_NAMES:
            self.py.reserve(n)
        self.w = _Writer()
        self.forward_results: dict[str, list[str]] = {}  # what each cell's forward returned
        self.backward_results: dict[str, list[str]] = {}
        self.kernel_names = [self.py.role("K_", k.label) for k in plan.kernels()]
        self.addresses = [self.py.role("at_", k.label) for k in plan.kernels()]
        self.seq = {n: self.py.role("seq_", n) for n, _ in plan.inputs}
        self.seq.update((c.writes, self.py.role("seq_", c.writes)) for c in plan.cells())
        self.seq.update((b.writes, self.py.role("seq_", b.writes)) for b in plan.layers)
        self.seq.update((b.reversed, self.py.role("seq_", b.reversed)) for b in plan.layers
                        if isinstance(b, BiPart))
        self.lengths = {n: self.py.role("lengths_", n) for n, _ in plan.inputs}
        self.param = {n: self.py.role("", n) for n in plan.params}
        self.grad = {n: self.py.role("g_", n) for n in plan.params}
        self.head_args = {h.name: tuple(self.py.role(p, h.name) for p in ("t_", "b_", "target_",
                                                                         "weight_"))
                          for h in plan.heads}
        # the sequences a gradient reaches: those the heads and later layers read
        read = {s for h in plan.heads for s, _ in h.reads} | {c.reads for c in plan.layers}
        self.d_seq = {c.writes: self.py.role("d_", c.writes) for c in plan.layers
                      if c.writes in read}

    def arguments(self) -> list[tuple[str, str]]:
        """(identifier, Numba type) of every argument, in order."""
        f = self.dtype
        args = [(a, "int64") for a in self.addresses]
        args += [(self.seq[n], "int64[:, ::1]" if kind == "tokens" else f"{f}[:, :, ::1]")
                 for n, kind in self.plan.inputs]
        args += [(self.lengths[n], "int64[::1]") for n, _ in self.plan.inputs]
        args += [(self.param[n], f"{f}[{', '.join([':'] * (d - 1) + ['::1'])}]")
                 for n, d in self.plan.params.items()]
        for h in self.plan.heads:
            t, b, target, weight = self.head_args[h.name]
            args += [(t, "int64[::1]"), (b, "int64[::1]"), (target, f"{f}[:, ::1]"),
                     (weight, "float64")]
        return args

    def write(self) -> StepSource:
        args = self.arguments()
        w = self.w
        w(JIT)
        with w.block(f"def loss_and_grad({', '.join(a for a, _ in args)}):"):
            w(comment("each parameter's gradient, summed into"))
            for n in self.plan.params:
                w(f"{self.grad[n]} = zeros({self.param[n]}.shape, DT)")
            for layer in self.plan.layers:
                if isinstance(layer, BiPart):
                    self.write_bidirectional(layer)
                else:
                    self.write_forward(layer)
            for layer in self.plan.layers:
                if layer.writes in self.d_seq:
                    w(f"{self.d_seq[layer.writes]} = zeros({self.seq[layer.writes]}.shape, DT)")
            terms = [self.write_head(h) for h in self.plan.heads]
            for layer in reversed(self.plan.layers):
                if isinstance(layer, BiPart):
                    self.write_bidirectional_backward(layer)
                else:
                    self.write_layer_backward(layer)
            w(f"return ({', '.join(terms + [self.grad[n] for n in self.plan.params])},)")
        return StepSource(self.module_head() + "\n".join(w.lines) + "\n",
                          "(" + ", ".join(t for _, t in args) + ",)")

    def module_head(self) -> str:
        lines = [docstring(f"network {self.plan.network}'s loss and gradient ({self.dtype}), "
                           "generated by seqdsl"),
                 "import sys", "", "import numpy as np", "from numba import njit", "",
                 "from seqdsl.runtime.numba.call import call_at, kernel_type",
                 "from seqdsl.runtime.numba.copies import copy_block",
                 "from seqdsl.runtime.numba.library import empty, zeros",
                 "from seqdsl.runtime.numba.lookup import add_by_id_into, gather_into", "",
                 f"DT = np.{self.dtype}",
                 comment("the generated kernels this step calls, by the address it is given")]
        for name, k in zip(self.kernel_names, self.plan.kernels()):
            lines.append(f"{name} = kernel_type(sys.modules[{k.module!r}].{k.function})")
        return "\n".join(lines) + "\n\n\n"

    def call(self, kernel: Kernel, args: list[str]) -> str:
        index = next(i for i, k in enumerate(self.plan.kernels()) if k is kernel)
        return (f"call_at({self.kernel_names[index]}, {self.addresses[index]}, "
                f"({', '.join(args)},))")

    def results(self, owner: str, names: list[str]) -> list[str]:
        """Identifiers for what a kernel call returns, unpacked at once."""
        return [self.py.role("", f"{owner} {n}") for n in names]

    def cell(self, prefix: str) -> CellPart:
        return next(c for c in self.plan.cells() if c.prefix == prefix)

    def write_forward(self, c: CellPart) -> None:
        w, py = self.w, self.py
        x, lengths = self.seq[c.reads], self.lengths[self.plan.lengths_of[c.reads]]
        w(comment(f"layer {c.prefix}, forward"))
        ins = {}
        for k in c.lookups:
            ins[k.input] = py.role("x_", f"{c.prefix} {k.input}")
            W = self.param[k.weight]
            w(f"{ins[k.input]} = empty(({x}.shape[0], {x}.shape[1], {W}.shape[0]), DT)")
            w(f"gather_into({W}[:, {k.lo}:{k.hi}], {x}, {lengths}, {ins[k.input]})")
        if not c.lookups:
            ins[c.inputs[0]] = x
        own = {}
        for col in c.columns:
            own[col.param] = py.role("", f"{c.prefix} {col.param}")
            W = self.param[col.weight]
            w(f"{own[col.param]} = empty(({W}.shape[0], {col.hi - col.lo}), DT)")
            w(f"copy_block({own[col.param]}, {W}, 0, 0, {W}.shape[0], {col.hi - col.lo}, 0, "
              f"{col.lo}, False)")
        own.update((n, self.param[k]) for n, k in c.own.items())
        starts = []
        if c.init is not None:  # the other cell's final states, by name
            source = self.cell(c.init)
            w(comment(f"starting from layer {c.init}'s final states"))
            starts = [self.forward_results[c.init][1 + [n for n, _ in source.states].index(s)]
                      for s, _ in c.states]
        for s, size in c.states if c.init is None else ():
            starts.append(py.role("", f"{c.prefix} {s}", "0"))
            w(f"{starts[-1]} = zeros(({x}.shape[1], {size}), DT)")
        args = ([str(n) for n in c.size_args] + [ins[n] for n in c.inputs] + [lengths]
                + starts + [own[n] for n in c.params])
        got = ([self.seq[c.writes]] + self.results(c.prefix, [f"{s} final" for s, _ in c.states])
               + self.results(c.prefix, c.inputs) + self.results(c.prefix, [
                   f"tape {i}" for i in range(c.n_tapes)]))
        self.forward_results[c.prefix] = got
        w(f"{', '.join(got)} = {self.call(c.forward, args)}")

    def write_head(self, h: HeadPart) -> str:
        w, py = self.w, self.py
        t, b, target, weight = self.head_args[h.name]
        terms, n = py.role("terms_", h.name), py.role("n_", h.name)
        w(comment(f"output {h.name}: its loss over the labelled rows, and its gradient"))
        w(f"{terms} = zeros((0, 0), DT)")
        w(f"{n} = {t}.shape[0]")
        with w.block(f"if {n} > 0:"):
            value = {}
            for s, size in h.reads:
                value[s] = py.role("rows_", f"{h.name} {s}")
                w(f"{value[s]} = empty(({n}, {size}), DT)")
                with w.block(f"for _i in range({n}):"), w.block(f"for _k in range({size}):"):
                    w(f"{value[s]}[_i, _k] = {self.seq[s]}[{t}[_i], {b}[_i], _k]")
            value.update((p, self.param[p]) for p in h.params)
            value[h.target] = target
            made = self.results(h.name, h.loss_returns)
            made[h.loss_returns.index(h.terms)] = terms
            w(f"{', '.join(made)}, = "
              f"{self.call(h.loss, self.rows_args(h.loss_sizes, h.loss_args, value))}")
            value.update(zip(h.loss_returns, made))
            value[f"d_{h.terms}"] = py.role("d_terms_", h.name)
            d_terms = value[f"d_{h.terms}"]
            w(f"{d_terms} = empty({terms}.shape, DT)")
            with w.block(f"for _i in range({n}):"), \
                    w.block(f"for _k in range({terms}.shape[1]):"):
                w(f"{d_terms}[_i, _k] = {weight}")
            grads = self.results(h.name, h.backward_returns)
            w(f"{', '.join(grads)}, = "
              f"{self.call(h.backward, self.rows_args(h.backward_sizes, h.backward_args, value))}")
            got = dict(zip(h.backward_returns, grads))
            for s, size in h.reads:
                if s in self.d_seq:
                    with w.block(f"for _i in range({n}):"), w.block(f"for _k in range({size}):"):
                        w(f"{self.d_seq[s]}[{t}[_i], {b}[_i], _k] += {got[f'd_{s}']}[_i, _k]")
            for p in h.params:
                self.add_into(p, got[f"d_{p}"])
        return terms

    def rows_args(self, sizes: tuple[int, ...], names: list[str], value: dict) -> list[str]:
        return [str(n) for n in sizes] + [value[n] for n in names]

    def gradient_of(self, sequence: str) -> str:
        """The gradient the layer writing `sequence` gets: what its readers
        summed, or zeros where nothing reads it."""
        d_out = self.d_seq.get(sequence)
        if d_out is None:
            d_out = self.py.role("d_", sequence)
            self.w(f"{d_out} = zeros({self.seq[sequence]}.shape, DT)")
        return d_out

    def write_layer_backward(self, c: CellPart) -> None:
        dx = self.write_backward(c, self.gradient_of(c.writes))
        if dx is not None and c.reads in self.d_seq:
            d, w = self.d_seq[c.reads], self.w
            with w.block(f"for _t in range({d}.shape[0]):"), \
                    w.block(f"for _b in range({d}.shape[1]):"), \
                    w.block(f"for _k in range({d}.shape[2]):"):
                w(f"{d}[_t, _b, _k] += {dx}[_t, _b, _k]")

    def write_backward(self, c: CellPart, d_out: str) -> str | None:
        """The cell's backward run from `d_out`, its parameters' gradients
        added in; the gradient of the vectors it reads (None for token ids)."""
        w, py = self.w, self.py
        x, lengths = self.seq[c.reads], self.lengths[self.plan.lengths_of[c.reads]]
        result = self.forward_results[c.prefix]
        ni, ns = len(c.inputs), len(c.states)
        w(comment(f"layer {c.prefix}, backward"))
        ends = []
        later = [d for d in self.plan.cells() if d.init == c.prefix]
        if later:  # the gradient of its final states: the other cell's initial states'
            (d,) = later
            w(comment(f"its final states' gradient: layer {d.prefix}'s initial states'"))
            ends = [self.backward_results[d.prefix][len(d.inputs)
                                                    + [n for n, _ in d.states].index(s)]
                    for s, _ in c.states]
        for s, size in c.states if not later else ():
            ends.append(py.role("d_", f"{c.prefix} {s}", "_final"))
            w(f"{ends[-1]} = zeros(({x}.shape[1], {size}), DT)")
        own = {n: self.param[k] for n, k in c.own.items()}
        own.update((col.param, py.role("", f"{c.prefix} {col.param}")) for col in c.columns)
        args = ([str(n) for n in c.size_args] + [d_out] + ends + [lengths]
                + result[1 + ns:]
                + [own[n] for n in c.params])
        grads = self.results(c.prefix, [f"d_{n}" for n in c.inputs]
                             + [f"d_{s}0" for s, _ in c.states] + [f"d_{n}" for n in c.params])
        self.backward_results[c.prefix] = grads
        w(f"{', '.join(grads)} = {self.call(c.backward, args)}")
        at = dict(zip(c.params, grads[ni + ns:]))
        for n, k in c.own.items():
            self.add_into(k, at[n])
        for col in c.columns:
            w(f"copy_block({self.grad[col.weight]}, {at[col.param]}, 0, {col.lo}, "
              f"{at[col.param]}.shape[0], {col.hi - col.lo}, 0, 0, True)")
        for k in c.lookups:
            w(f"add_by_id_into({self.grad[k.weight]}[:, {k.lo}:{k.hi}], {x}, {lengths}, "
              f"{grads[c.inputs.index(k.input)]})")
        return None if c.lookups else grads[0]

    @contextlib.contextmanager
    def each_step(self, b: BiPart, a: str):
        """Loops over the steps `_t` and examples `_b` of `a`, with `_s` the
        step that `_t` is in reverse (each example's own; padding stays)."""
        lengths = self.lengths[self.plan.lengths_of[b.reads]]
        with self.w.block(f"for _t in range({a}.shape[0]):"), \
                self.w.block(f"for _b in range({a}.shape[1]):"):
            self.w(f"_s = {lengths}[_b] - 1 - _t if _t < {lengths}[_b] else _t")
            yield

    def write_bidirectional(self, b: BiPart) -> None:
        w = self.w
        src, rev, out = self.seq[b.reads], self.seq[b.reversed], self.seq[b.writes]
        w(comment(f"layer {b.writes}: the input with each example's steps in reverse, for "
                  "the backward copy"))
        w(f"{rev} = np.empty_like({src})")
        with self.each_step(b, src):
            if b.tokens:
                w(f"{rev}[_t, _b] = {src}[_s, _b]")
            else:
                with w.block(f"for _k in range({src}.shape[2]):"):
                    w(f"{rev}[_t, _b, _k] = {src}[_s, _b, _k]")
        self.write_forward(b.forward)
        self.write_forward(b.backward)
        na, nb = b.sizes
        fwd, bwd = self.seq[b.forward.writes], self.seq[b.backward.writes]
        w(comment(f"layer {b.writes}: both outputs per step, the backward copy's in order"))
        w(f"{out} = empty(({fwd}.shape[0], {fwd}.shape[1], {na + nb}), DT)")
        self.copy_halves(b, out, fwd, bwd, join=True)

    def copy_halves(self, b: BiPart, whole: str, first: str, second: str, join: bool) -> None:
        """`whole`'s features: `first`'s, then `second`'s with each example's
        steps in reverse; copied into `whole` (join) or out of it."""
        na, nb = b.sizes
        with self.each_step(b, whole):
            for n, at, part, step in ((na, "", first, "_t"), (nb, f"{na} + ", second, "_s")):
                with self.w.block(f"for _k in range({n}):"):
                    joined, half = f"{whole}[_t, _b, {at}_k]", f"{part}[{step}, _b, _k]"
                    self.w(f"{joined} = {half}" if join else f"{half} = {joined}")

    def write_bidirectional_backward(self, b: BiPart) -> None:
        w, py = self.w, self.py
        na, nb = b.sizes
        d_out = self.gradient_of(b.writes)
        d_fwd, d_bwd = py.role("d_", b.forward.writes), py.role("d_", b.backward.writes)
        w(comment(f"layer {b.writes}, backward: each copy's part of the gradient, the backward "
                  "copy's in its own order"))
        w(f"{d_fwd} = empty(({d_out}.shape[0], {d_out}.shape[1], {na}), DT)")
        w(f"{d_bwd} = empty(({d_out}.shape[0], {d_out}.shape[1], {nb}), DT)")
        self.copy_halves(b, d_out, d_fwd, d_bwd, join=False)
        dx = self.write_backward(b.forward, d_fwd)
        dx_b = self.write_backward(b.backward, d_bwd)
        if dx is not None and b.reads in self.d_seq:
            d = self.d_seq[b.reads]
            w(comment("the input's gradient: both copies', the backward one's in order"))
            with self.each_step(b, d), w.block(f"for _k in range({d}.shape[2]):"):
                w(f"{d}[_t, _b, _k] += {dx}[_t, _b, _k] + {dx_b}[_s, _b, _k]")

    def add_into(self, param: str, value: str) -> None:
        """The parameter's gradient += value (as loops: an array expression
        would cost Numba seconds to compile)."""
        g = self.grad[param]
        if self.plan.params[param] == 2:
            self.w(f"copy_block({g}, {value}, 0, 0, {g}.shape[0], {g}.shape[1], 0, 0, True)")
            return
        with self.w.block(f"for _k in range({g}.shape[0]):"):
            self.w(f"{g}[_k] += {value}[_k]")
