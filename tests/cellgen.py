"""Hypothesis strategies that write random cells as .seq source.

A generated cell has one to three states and up to three intermediates;
their equations are random expression trees over every forward op: weights
applied to vectors and to concatenations (with the input and with other
values), gates, elementwise arithmetic with parameter vectors and numbers,
and every function. Every value has the state size H: a weight's row count
is inferred, so each weight's result is tied to a value of known size
somewhere (the generator "anchors" it by adding such a value where needed).
Arguments of `log` and `exp` are kept bounded so the finite differences the
cells are checked with stay accurate.

The language's later forms are drawn too: learned scalars (`param α0 : 1`,
scaling a value), transposed weights (`W0ᵀ h`, `W0.T h`) and matrix sums
(`(W0 - W0ᵀ - 0.5 * I) h`) of square weights, intermediates of their own size
(`p0 : M = (W1 x) * (W2 h)`, read through weights), and a computed output
(`output y<t> = softmax(W3 h<t> + b0)`, of its own size Y). `SIZES` binds M
and Y; `sizes_for` picks those a cell has.
"""
from __future__ import annotations

from hypothesis import strategies as st

STATE_NAMES = ["h", "c", "m"]
SIZES = {"M": 2, "Y": 3}  # the sized intermediates' symbol and the computed output's


def sizes_for(cell_type) -> dict[str, int]:
    """The sizes of SIZES that a generated cell type has."""
    return {k: v for k, v in SIZES.items() if k in cell_type.symbols}


def layer_sizes(src: str) -> str:
    """The sizes of SIZES a generated cell has, as a network layer gives them:
    `, M=2, Y=3` (or nothing). A computed output's size may be tied to H,
    so the cell is read to know."""
    from seqdsl.spec import loads
    sizes = sizes_for(loads(src, "generated.seq").cell())
    return "".join(f", {k}={v}" for k, v in sizes.items())
FUNCTIONS = ["σ", "sigmoid", "tanh", "relu", "exp", "log", "softmax", "layernorm"]


class _Writer:
    def __init__(self, draw, n_states: int):
        self.draw = draw
        self.states = STATE_NAMES[:n_states]
        self.available: list[str] = list(self.states)  # size-H values readable now
        self.weights: dict[tuple, str] = {}  # part sizes -> a weight that may be shared
        self.n_weights = 0
        self.n_vec = 0
        self.scalars: list[str] = []  # declared `param α0 : 1`
        self.sized: list[str] = []  # intermediates of size M, read only through weights

    def weight(self, signature: tuple) -> str:
        if signature in self.weights and self.draw(st.booleans()):
            return self.weights[signature]  # a shared weight
        name = f"W{self.n_weights}"
        self.n_weights += 1
        self.weights[signature] = name
        return name

    def vector(self) -> str:
        if self.n_vec and self.draw(st.booleans()):
            return f"b{self.draw(st.integers(0, self.n_vec - 1))}"
        self.n_vec += 1
        return f"b{self.n_vec - 1}"

    def leaf(self) -> str:
        return self.draw(st.sampled_from(self.available))

    def anchored(self, depth: int) -> str:
        """An expression whose size is fixed at H by what it contains."""
        text, ok = self.expr(depth)
        return text if ok else f"({text} + {self.leaf()})"

    def applied(self, depth: int) -> str:
        """A weight applied to a vector or a concatenation, maybe with the input."""
        parts = ["x"] if self.draw(st.booleans()) else []
        n_more = self.draw(st.integers(0 if parts else 1, 2))
        parts += [self.anchored(depth - 1) if depth > 0 and self.draw(st.booleans())
                  else self.leaf() for _ in range(n_more)]
        if self.sized and self.draw(st.integers(0, 3)) == 0:
            parts.append(self.draw(st.sampled_from(self.sized)))
        self.draw(st.randoms()).shuffle(parts)
        w = self.weight(tuple("X" if p == "x" else "M" if p in self.sized else "H"
                              for p in parts))
        if parts == [p for p in parts if p not in self.sized and p != "x"] and len(parts) == 1 \
                and ("H",) in self.weights and self.draw(st.integers(0, 3)) == 0:
            return self.transposed(self.weights[("H",)], parts[0])
        if len(parts) == 1 and (parts[0].isidentifier() or parts[0].endswith(">")) \
                and self.draw(st.booleans()):
            return f"{w} {parts[0]}"  # juxtaposition: `W x`, `W h<t>`
        return f"{w}[{', '.join(parts)}]"

    def transposed(self, w: str, part: str) -> str:
        """A square weight's transpose, or a sum of it and its transpose,
        applied to a size-H value."""
        form = self.draw(st.sampled_from(["T", "dotT", "anti", "shift"]))
        arg = part if part.isidentifier() or part.endswith(">") else f"[{part}]"
        if form == "T":
            return f"{w}ᵀ {arg}"
        if form == "dotT":
            return f"{w}.T[{part}]"
        if form == "anti":
            return f"({w} - {w}ᵀ) {arg}"
        return f"({w}ᵀ - 0.5 * I) {arg}"

    def scalar(self) -> str:
        """A learned scalar, new or one declared before."""
        if self.scalars and self.draw(st.booleans()):
            return self.draw(st.sampled_from(self.scalars))
        name = f"α{len(self.scalars)}"
        self.scalars.append(name)
        return name

    def expr(self, depth: int) -> tuple[str, bool]:
        """(expression of size H, whether its size is anchored)."""
        kinds = ["leaf", "applied"] if depth <= 0 else [
            "leaf", "applied", "gate", "binary", "binary", "scale", "bias", "func", "func",
            "neg", "div"]
        kind = self.draw(st.sampled_from(kinds))
        if kind == "leaf":
            return self.leaf(), True
        if kind == "applied":
            return self.applied(depth), False
        if kind == "gate":
            return f"σ({self.applied(depth - 1)} + {self.vector()})", False
        a, a_ok = self.expr(depth - 1)
        if kind == "binary":
            b, b_ok = self.expr(depth - 1)
            op = self.draw(st.sampled_from(["+", "-", "*", "⊙"]))
            return f"({a} {op} {b})", a_ok or b_ok
        if kind == "scale":
            c = self.draw(st.sampled_from(["0.5", "2", "1.5", "3", "α", "σ(α)"]))
            if "α" in c:
                c = c.replace("α", self.scalar())
            return (f"({c} * {a})" if self.draw(st.booleans()) else f"(1 - {a})"), a_ok
        if kind == "bias":
            return f"({self.vector()} * {a} + {self.vector()})", a_ok
        if kind == "neg":
            return f"(-{a})", a_ok
        if kind == "div":
            return f"{a} / {self.draw(st.sampled_from(['2', '4', '0.5']))}", a_ok
        fn = self.draw(st.sampled_from(FUNCTIONS))
        if fn == "exp":
            return f"exp(tanh({a}))", a_ok
        if fn == "log":
            return f"log(1 + σ({a}))", a_ok
        if fn == "layernorm" and self.draw(st.booleans()):
            return f"({self.vector()} * layernorm({a}) + {self.vector()})", a_ok
        return f"{fn}({a})", a_ok


@st.composite
def cells(draw, max_depth: int = 3) -> str:
    """Source text of a random cell named `Gen` with input x and states of size H."""
    n_states = draw(st.integers(1, 3))
    w = _Writer(draw, n_states)
    lines = ["cell Gen {", "    input x", f"    state {', '.join(w.states)} : H"]
    pending = list(w.states)
    n_inter = 0
    while pending:
        # Either an intermediate (usable by the equations after it) or a state update.
        if n_inter < 3 and draw(st.booleans()):
            if draw(st.integers(0, 3)) == 0:  # an intermediate of its own size M
                name = f"p{len(w.sized)}"
                # Weights of M rows: never shared with those of H rows.
                first = f"{w.weight(('X', '→M'))} x"
                second = f"{w.weight(('H', '→M'))}[{w.leaf()}]"
                lines.append(f"    {name} : M = ({first}) * ({second})")
                w.sized.append(name)
                n_inter += 1
                continue
            name = f"g{n_inter}"
            n_inter += 1
            lines.append(f"    {name} = {w.anchored(draw(st.integers(1, max_depth)))}")
            w.available.append(name)
            continue
        s = pending.pop(draw(st.integers(0, len(pending) - 1)))
        body, _ = w.expr(draw(st.integers(1, max_depth)))
        if draw(st.booleans()):  # the course's gated update
            gate = f"σ({w.applied(1)} + {w.vector()})"
            body = f"{gate} * {body} + (1 - {gate}) * {s}" if draw(st.booleans()) \
                else f"{gate} * {body}"
        lines.append(f"    {s}<t> = {body}")
        w.available.append(f"{s}<t>")
    if draw(st.integers(0, 3)) == 0:  # a computed output, of its own size Y
        fn = draw(st.sampled_from(["softmax", "tanh", ""]))
        body = f"W{w.n_weights} {w.states[0]}<t> + {w.vector()}"
        w.n_weights += 1
        lines.append(f"    output y<t> = {fn}({body})" if fn else f"    output y<t> = {body}")
    else:
        lines.append(f"    output {w.states[0]}")
    lines.append("}")
    scalars = [f"    param {a} : {draw(st.sampled_from(['1', 'scalar']))}"
               + draw(st.sampled_from(["", " = 0.5", " = -1", " ~ normal(0.5)"]))
               for a in w.scalars]
    lines[3:3] = scalars
    return "\n".join(lines) + "\n"
