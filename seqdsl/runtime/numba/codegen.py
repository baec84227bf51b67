"""Python source for a cell's forward and backward passes over whole
sequences, for one dtype and any sizes, for Numba to compile.

The generated functions run the time loop themselves. Each step is a short
list of *stages*: a stacked matrix product per operand (see plan.py), fused
loops over the batch and features holding every elementwise equation as one
scalar statement (no temporary arrays; a value becomes an array only when a
later stage reads it), and a row loop per feature-wise op (softmax,
layernorm). What an op's statement or row loop is comes from its entry in
ir/ops/. The IR equation is kept as a comment beside the statement that
computes it.

Sizes are run-time values: every size of the step graphs is a linear form
over the cell's size symbols, written as Python over their variables
(`4 * n_H`, `n_H + n_X`), so one compiled module serves every size.
"""
from __future__ import annotations

import builtins
import itertools
import keyword
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

from ...ir.graph import BATCH, VECTOR, Eqn, Graph, Lit, Size, Var
from ...ir.ops import OPS, Accumulate, Row, Scalar

# Every name the generated module uses besides those a Names allocates and the
# constants K0, K1, ...: module globals, arguments the caller passes
# positionally, and the loop indices and scratch values of the step code. A
# name from the spec never becomes one of these. The scratch values of an
# op's row code are named in its registry entry.
# The scalar functions of activations.py every generated module imports.
ACTIVATIONS = ("exp", "sigmoid", "tanh")
ACTIVATIONS_IMPORT = f"from seqdsl.runtime.numba.activations import {', '.join(ACTIVATIONS)}"
# The block copies and transposes of copies.py every generated module imports.
COPIES = ("copy_block", "copy_block_t", "transpose_into")
COPIES_IMPORT = f"from seqdsl.runtime.numba.copies import {', '.join(COPIES)}"
# The products and allocation of library.py every generated module imports.
LIBRARY = ("dot", "dot_into", "empty", "shortest", "zeros")
LIBRARY_IMPORT = f"from seqdsl.runtime.numba.library import {', '.join(LIBRARY)}"
# The step products over packed weights of packed.py every generated module imports.
PACKED = ("packed_for_steps", "packed_product", "packed_work")
PACKED_IMPORT = f"from seqdsl.runtime.numba.packed import {', '.join(PACKED)}"
GENERATOR_NAMES = frozenset({
    "np", "DT", "njit", *ACTIVATIONS, *COPIES, *LIBRARY, *PACKED,
    "dot_rows",  # the products of a head's rows (emit_rows.py)
    "forward", "backward", "lengths", "out", "dout",
    "dS", "run", "_T", "_B", "_t", "_b", "_j", "_k", "_i", "_i0", "_c",
}) | frozenset(n for op in OPS.values() if isinstance(op.code, Row) for n in op.code.scratch)
RESERVED = (frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)
            | frozenset(dir(builtins)) | GENERATOR_NAMES)
_CONSTANT = re.compile(r"K\d+")

# How every generated function is compiled: cached on disk, with NumPy's
# float semantics, and without the GIL, so that a batch split into shards
# runs its shards' kernels on several threads at once (shards.py).
JIT = "@njit(cache=True, nogil=True, error_model='numpy')"


def escaped(text: str) -> str:
    """`text` made safe to stand in generated source, in a comment or between
    triple quotes: backslashes and double quotes escaped, and every character
    that is not printable (newlines, U+2028, U+0085, other controls, lone
    surrogates) written as its escape, as repr() writes it. Printable
    non-ASCII (`Γu: B×8`) stays as it is, so comments stay readable."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def comment(text: str) -> str:
    """A comment line echoing user text (an IR equation, a name)."""
    return "# " + escaped(text)


def docstring(text: str) -> str:
    """A triple-quoted string literal holding user text (the module's header)."""
    return '"""' + escaped(text) + '"""'


def float_literal(value: float) -> str:
    """Python text for a float; repr() writes inf and nan as bare names."""
    if math.isfinite(value):
        return repr(value)
    return "np.nan" if math.isnan(value) else ("np.inf" if value > 0 else "-np.inf")


def size_code(size: Size, variable: Callable[[str], str]) -> str:
    """Python for a size: `4 * n_H`, `n_H + n_X`, `2 * n_H - 1`, `8`, with
    `variable(symbol)` naming each symbol's variable. A sum: callers put it
    only where a sum needs no parentheses (an index, a call's argument)."""
    terms = [(c, variable(k) if abs(c) == 1 else f"{abs(c)} * {variable(k)}")
             for k, c in size.terms]
    if size.const or not terms:
        terms.append((size.const, str(abs(size.const))))
    text = " ".join(f"{'-' if c < 0 else '+'} {t}" for c, t in terms)
    return text[2:] if text.startswith("+") else "-" + text[2:]


def size_symbols(graph: Graph) -> list[str]:
    """The size symbols of a graph, which its generated code takes as
    arguments: of its outputs first (a cell's new states: `H`), then of its
    inputs, parameters and values, each once, in order."""
    vars_ = list(graph.outputs) + list(graph.inputs) + list(graph.params) + [
        e.out for e in graph.eqns]
    sizes = [s for v in vars_ for s in v.shape]
    sizes += [s for e in graph.eqns for _, v in e.attrs
              for s in (v if isinstance(v, tuple) else (v,)) if isinstance(s, Size)]
    return list(dict.fromkeys(k for s in sizes for k, _ in s.terms))


class Names:
    """Every identifier of a generated module: readable and unique Python
    names from IR names (`Γu` → `G_u`, `c̃` → `c_tilde`, `a<t-1>` → `a_prev`,
    `a<t>` → `a_t`, `d_c<t>` → `d_c_t`), the names derived from them
    (`buf_a_t`, the initial state `a0`), and the variables of size symbols
    (`n_H`), all drawn from one pool, so no two ever coincide. Keywords,
    builtins and the generator's own names (RESERVED, K<n>) are never handed
    out: `lambda` becomes `lambda_`."""

    MARKS = {"\u0303": "_tilde", "\u0302": "_hat", "\u0304": "_bar", "\u0307": "_dot"}

    def __init__(self):
        self.table: dict[tuple[str, str, str], str] = {}
        self.used: set[str] = set()

    def __call__(self, name: str) -> str:
        """The identifier of IR value `name`."""
        return self.role("", name)

    def role(self, prefix: str, name: str, suffix: str = "") -> str:
        """The identifier of the `prefix`…`suffix` role of IR value `name`
        (`role("buf_", "a<t>")` → `buf_a_t`); the same each time asked."""
        key = (prefix, name, suffix)
        if key not in self.table:
            base = self(name) if prefix or suffix else self._ascii(name)
            self.table[key] = self._fresh(prefix + base + suffix)
        return self.table[key]

    def reserve(self, name: str) -> None:
        """Keep `name`, one the generator writes itself, from being handed out."""
        self.used.add(name)

    def size(self, size: Size) -> str:
        """Python for `size` over the variables of its symbols (`4 * n_H`)."""
        return size_code(size, lambda symbol: self.role("n_", symbol))

    def _fresh(self, base: str) -> str:
        candidates = itertools.chain([base, base + "_"],
                                     (f"{base}_{n}" for n in itertools.count(2)))
        py = next(c for c in candidates if c not in self.used and c not in RESERVED
                  and not _CONSTANT.fullmatch(c))
        assert py.isidentifier() and py.isascii(), py
        self.used.add(py)
        return py

    def _ascii(self, name: str) -> str:
        name = name.replace("<t-1>", "_prev").replace("<t>", "_t")
        out = []
        for ch in unicodedata.normalize("NFD", name):
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                out.append(ch)
            elif ch in self.MARKS:
                out.append(self.MARKS[ch])
            elif unicodedata.category(ch).startswith("L"):
                word = unicodedata.name(ch, "X").split()[-1]
                out.append(("G" if word == "GAMMA" and ch.isupper() else word.lower()) + "_")
            else:
                out.append("_")
        # A letter's name may hold other characters (`IDEOGRAPH-4E00`).
        text = re.sub(r"[^0-9A-Za-z_]", "_", "".join(out))
        text = re.sub(r"_+", "_", text).strip("_") or "v"
        return text if not text[0].isdigit() else "v" + text


@dataclass
class Stage:
    kind: str  # "loop", "row", "gemm", "store"
    size: Size = Size()
    eqns: list[Eqn] = field(default_factory=list)
    var: Var | None = None  # for "store": the value to store
    lines: list[str] = field(default_factory=list)  # for "gemm": its code


class _Writer:
    """Source lines with indentation."""

    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append("    " * self.depth + line if line else "")

    def block(self, header: str):
        self(header)
        return _Indent(self)


class _Indent:
    def __init__(self, w):
        self.w = w

    def __enter__(self):
        self.w.depth += 1

    def __exit__(self, *exc):
        self.w.depth -= 1


class StepCode:
    """Writes the body of one time step of a graph as stages."""

    def __init__(self, graph: Graph, names: Names, consts: dict, source, keep: set[str],
                 stores: dict[str, list[str]], gemm_before: dict[str, str], skip: set[str],
                 materialise: set[str]):
        self.graph = graph
        self.py = names
        self.consts = consts
        self.external = source  # name -> template for values not computed here
        self.keep = keep  # values that must end up in a buffer
        self.stores = stores  # name -> targets (templates with {j}) to write it to
        self.gemm_before = gemm_before  # name -> group operand whose product it reads
        self.skip = skip  # equations handled elsewhere (outer, bsum of params...)
        self.materialise = set(materialise)
        self.stages: list[Stage] = []
        self.stage_of: dict[str, int] = {}
        # Arguments written out by the caller (product slices), or None for the default.
        self.args_of = lambda e, local: None

    def use_stages(self, stages: list[Stage]) -> None:
        """Write `stages` as given (ordered elsewhere), each value known by
        the stage that computes it."""
        self.stages = stages
        self.stage_of = {e.out.name: i for i, st in enumerate(stages) for e in st.eqns}

    def const(self, value: float) -> str:
        if value not in self.consts:
            self.consts[value] = f"K{len(self.consts)}"
        return self.consts[value]

    def schedule(self, gemms: dict[str, Stage], at_end: tuple[str, ...] = (),
                 gemm_inputs: dict[str, list[str]] | None = None,
                 made_by_gemm: dict[str, str] | None = None) -> None:
        """Order the step into stages. A product runs before the first
        equation that reads it; `gemm_inputs[op]` are values it reads that
        other products make (`made_by_gemm[name]` = that product), so those
        run, and their results are stored, first. `at_end` names products
        the end of the step reads."""
        gemm_inputs = gemm_inputs or {}
        made_by_gemm = made_by_gemm or {}
        done: set[str] = set()
        stored: set[str] = set()
        vars_ = self.graph.vars()

        def store_stage(name):
            stored.add(name)
            if self.external(vars_[name]) != "K0":  # targets start at zero
                self.stages.append(Stage("store", vars_[name].size, var=vars_[name]))

        def ensure(op):
            if op in done:
                return
            done.add(op)
            for name in gemm_inputs.get(op, ()):
                if name in made_by_gemm:
                    ensure(made_by_gemm[name])
            self.stages.append(gemms[op])
            for name, by in made_by_gemm.items():
                if by == op and self.stores.get(name) and name not in stored:
                    store_stage(name)

        # Values from outside the step (the seeds) are stored before anything else.
        for name, targets in self.stores.items():
            if targets and name not in made_by_gemm and name in vars_ and not any(
                    e.out.name == name for e in self.graph.eqns):
                store_stage(name)
        current: Stage | None = None
        for e in self.graph.eqns:
            if e.out.name in self.skip:
                continue
            for op in self.gemm_before.get(e.out.name, ()):
                if op not in done:
                    ensure(op)
                    current = None
            code = OPS[e.op].code
            if isinstance(code, Row):
                self.stages.append(Stage("row", e.out.size, [e]))
                current = None
            elif e.out.kind == BATCH or isinstance(code, Accumulate):
                # A sum over the batch has its argument's size. Sizes equal as
                # forms share a loop; sizes equal only for some bindings do not.
                n = e.out.size
                if current is None or current.size != n:
                    current = Stage("loop", n)
                    self.stages.append(current)
                current.eqns.append(e)
            else:
                continue
            self.stage_of[e.out.name] = len(self.stages) - 1
        for op in at_end:
            ensure(op)
        # A value read by another stage, or kept, lives in a buffer.
        for i, st in enumerate(self.stages):
            for e in st.eqns:
                for a in e.args:
                    if isinstance(a, Var) and self.stage_of.get(a.name, i) != i:
                        self.materialise.add(a.name)
                if st.kind == "row":
                    self.materialise.add(e.out.name)
        self.materialise |= {n for n in self.keep if n in self.stage_of}

    def buffers(self) -> list[Var]:
        return [v for n, v in self.graph.vars().items() if n in self.materialise
                and n in self.stage_of and v.kind == BATCH]

    def src(self, a, local: set[str]) -> str:
        """A template (with {j}) reading value `a` at row b, column {j}."""
        if isinstance(a, Lit):
            return self.const(float(a.value))
        if a.name in local:
            return self.py(a.name)
        if a.name in self.stage_of and a.name in self.materialise:
            return f"{self.py.role('buf_', a.name)}[_b, {{j}}]"
        return self.external(a)

    def write(self, w: _Writer, active: str) -> None:
        for st in self.stages:
            if st.kind == "gemm":
                self.write_gemm(w, st)
                continue
            with w.block("for _b in range(_B):"):
                with w.block(f"if {active}:"):
                    if st.kind == "loop":
                        self.write_loop(w, st)
                    elif st.kind == "store":
                        with w.block(f"for _j in range({self.py.size(st.size)}):"):
                            value = self.src(st.var, set()).format(j="_j")
                            for target in self.stores[st.var.name]:
                                w(f"{target.format(j='_j')} = {value}")
                    else:
                        self.write_row(w, st.eqns[0])

    def write_loop(self, w: _Writer, st: Stage) -> None:
        local: set[str] = set()
        with w.block(f"for _j in range({self.py.size(st.size)}):"):
            for e in st.eqns:
                args = self.args_of(e, local)
                if args is None:
                    args = [self.src(a, local).format(j="_j") for a in e.args]
                w(comment(str(e)))
                if isinstance(OPS[e.op].code, Accumulate):
                    w(f"{self.py.role('acc_', e.out.name)}[_j] += {args[0]}")
                    continue
                name = self.py(e.out.name)
                w(f"{name} = {self.expr(e, args)}")
                local.add(e.out.name)
                if e.out.name in self.materialise:
                    w(f"{self.py.role('buf_', e.out.name)}[_b, _j] = {name}")
                for target in self.stores.get(e.out.name, ()):
                    w(f"{target.format(j='_j')} = {name}")

    def expr(self, e: Eqn, args: list[str]) -> str:
        """The expression of `e` at one entry; a `linear`'s `args` are the
        slices of the products the plan made for it."""
        return scalar_code(e)(args)

    def write_row(self, w: _Writer, e: Eqn) -> None:
        out = self.py.role("buf_", e.out.name)
        w(comment(str(e)))
        args = [self.src(x, set()) for x in e.args]
        for line in OPS[e.op].code.write(e, f"{out}[_b, {{j}}]", args, self.const, self.py.size):
            w(line)
        for target in self.stores.get(e.out.name, ()):
            with w.block(f"for _k in range({self.py.size(e.out.size)}):"):
                w(f"{target.format(j='_k')} = {out}[_b, _k]")

    def write_gemm(self, w: _Writer, st: Stage) -> None:
        for line in st.lines:
            w(line)


def scalar_code(e: Eqn) -> Scalar:
    code = OPS[e.op].code
    if not isinstance(code, Scalar):
        raise TypeError(f"`{e}` is not computed entry by entry ({type(code).__name__})")
    return code


def vector_prologue(graph: Graph, py: Names, consts_src, w: _Writer, source) -> list[Var]:
    """Equations on parameters alone (VECTOR kind) do not change with t: they
    are computed once, before the loop."""
    made = []
    for e in graph.eqns:
        if e.out.kind != VECTOR or isinstance(OPS[e.op].code, Accumulate):
            continue
        n = py.size(e.out.size)
        name = py.role("vec_", e.out.name)
        args = [consts_src(a) if isinstance(a, Lit) else source(a) for a in e.args]
        w(comment(str(e)))
        w(f"{name} = empty({n}, DT)")
        code = OPS[e.op].code
        if isinstance(code, Row):  # softmax(b): the row is the vector
            for line in code.write(e, f"{name}[{{j}}]", args,
                                   lambda value: consts_src(Lit(value)), py.size):
                w(line)
        else:
            with w.block(f"for _j in range({n}):"):
                w(f"{name}[_j] = " + scalar_code(e)([a.format(j="_j") for a in args]))
        made.append(e.out)
    return made
