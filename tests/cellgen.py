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
"""
from __future__ import annotations

from hypothesis import strategies as st

STATE_NAMES = ["h", "c", "m"]
FUNCTIONS = ["σ", "sigmoid", "tanh", "relu", "exp", "log", "softmax", "layernorm"]


class _Writer:
    def __init__(self, draw, n_states: int):
        self.draw = draw
        self.states = STATE_NAMES[:n_states]
        self.available: list[str] = list(self.states)  # size-H values readable now
        self.weights: dict[tuple, str] = {}  # part sizes -> a weight that may be shared
        self.n_weights = 0
        self.n_vec = 0

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
        self.draw(st.randoms()).shuffle(parts)
        w = self.weight(tuple("X" if p == "x" else "H" for p in parts))
        if len(parts) == 1 and (parts[0].isidentifier() or parts[0].endswith(">")) \
                and self.draw(st.booleans()):
            return f"{w} {parts[0]}"  # juxtaposition: `W x`, `W h<t>`
        return f"{w}[{', '.join(parts)}]"

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
            c = self.draw(st.sampled_from(["0.5", "2", "1.5", "3"]))
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
    lines.append(f"    output {w.states[0]}")
    lines.append("}")
    return "\n".join(lines) + "\n"
