"""The graph IR as Graphviz DOT source: values are nodes, arguments edges."""
from __future__ import annotations

from .graph import Eqn, Graph, Lit


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(e: Eqn) -> str:
    attrs = "".join(f"[{v[0]}:{v[1]}]" for k, v in e.attrs if k == "cols")  # not `of=`
    return f"{e.out.name}: {e.out.type_str()}\n{e.op}{attrs}"


def to_dot(graph: Graph) -> str:
    """DOT source for `graph`: inputs as ellipses, parameters as grey boxes,
    equations as rounded boxes, outputs drawn with a double border."""
    ids: dict[str, str] = {}
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=11];']
    outputs = {v.name for v in graph.outputs}

    def node(name: str, label: str, style: str) -> None:
        ids[name] = f"n{len(ids)}"
        extra = ", peripheries=2" if name in outputs else ""
        lines.append(f"  {ids[name]} [label={_quote(label)}, {style}{extra}];")

    for v in graph.inputs:
        node(v.name, f"{v.name}: {v.type_str()}", 'shape=ellipse, style=filled, fillcolor="#dbe9f6"')
    for v in graph.params:
        node(v.name, f"{v.name}: {v.type_str()}", 'shape=box, style=filled, fillcolor="#eeeeee"')
    for i, e in enumerate(graph.eqns):
        node(e.out.name, _label(e), 'shape=box, style=rounded')
        for j, a in enumerate(e.args):
            if isinstance(a, Lit):
                lit = f"lit{i}_{j}"
                lines.append(f"  {lit} [label={_quote(str(a))}, shape=plaintext];")
                lines.append(f"  {lit} -> {ids[e.out.name]};")
            else:
                lines.append(f"  {ids[a.name]} -> {ids[e.out.name]};")
    lines.append("}")
    return "\n".join(lines)
