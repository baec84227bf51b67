"""The graph IR as a Graphviz picture: values are nodes, arguments edges.

Each value is drawn by its role in the step, so that a reader finds the
course's names at a glance: inputs, previous and new states, parameters with
their shapes, the user's named values (`Γu`, `c̃`), anonymous temporaries
(small and plain), and for a backward step the cotangents arriving and the
forward values it reads from the tape. Every node carries its role as its
`class` (kept in SVG output), and a legend lists the roles drawn.

`to_dot` gives one step; `to_dot_clusters` several (a network's cells and
heads), one cluster each. Both return `graphviz.Digraph`-built DOT source;
`render` in seqdsl.tools.render turns it into SVG, PNG or PDF.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import graphviz

from .graph import Eqn, Graph, Lit, Var

# A font with Greek and combining marks: Γu and c̃ must not come out as boxes.
# Fontconfig substitutes a near one where DejaVu is missing.
FONT = "DejaVu Sans"

# Temporaries the lowering (`t3`) and autodiff (`s3`, `d_t3`) name; every
# other value carries a name the user wrote. (The lowering numbers its
# temporaries around the user's names, so a user's own `t1` is drawn plain.)
_ANONYMOUS = re.compile(r"(d_)?[ts]\d+")


@dataclass(frozen=True)
class Style:
    legend: str
    attrs: tuple[tuple[str, str], ...]

    @property
    def fill(self) -> str:
        return dict(self.attrs).get("fillcolor", "white")


# Role -> how its nodes look. Colours differ in hue and lightness, shapes
# differ too, so the kinds stay apart in greyscale print.
STYLES = {
    "input": Style("input at step t (x)", (
        ("shape", "ellipse"), ("style", "filled"), ("fillcolor", "#cfe2f3"))),
    "state-prev": Style("previous state (c<t-1>)", (
        ("shape", "ellipse"), ("style", "filled,bold"), ("fillcolor", "#d9ead3"),
        ("color", "#38761d"))),
    "state-new": Style("new state (c<t>)", (
        ("shape", "box"), ("style", "rounded,filled,bold"), ("fillcolor", "#93c47d"),
        ("color", "#38761d"))),
    "param": Style("parameter, with its shape", (
        ("shape", "box"), ("style", "filled"), ("fillcolor", "#e6e6e6"), ("color", "#666666"))),
    "named": Style("named value (gate, c̃)", (
        ("shape", "box"), ("style", "rounded,filled"), ("fillcolor", "#fce5cd"),
        ("color", "#b45f06"))),
    "temp": Style("anonymous intermediate: its op", (
        ("shape", "box"), ("style", "rounded"), ("color", "#999999"), ("fontsize", "9"),
        ("margin", "0.05,0.02"), ("height", "0.3"))),
    "grad-in": Style("gradient arriving at an output of the step", (
        ("shape", "ellipse"), ("style", "filled"), ("fillcolor", "#f4cccc"),
        ("color", "#990000"))),
    "grad-out": Style("gradient passed back to step t-1", (
        ("shape", "box"), ("style", "rounded,filled,bold"), ("fillcolor", "#ea9999"),
        ("color", "#990000"))),
    "tape": Style("forward value read from the tape", (
        ("shape", "cylinder"), ("style", "filled"), ("fillcolor", "#fff2cc"),
        ("color", "#bf9000"))),
    "param-grad": Style("gradient of a parameter", (
        ("shape", "box"), ("style", "rounded,filled"), ("fillcolor", "#d9d2e9"),
        ("color", "#666666"))),
}
LEGEND_RECURRENCE = {False: "dashed: the new state is the next step's previous state",
                     True: "dashed: the gradient passed back to step t-1"}
TAPE_EDGE = "#bf9000"  # reads from the tape, drawn in the tape's colour
PARAM_EDGE = "#888888"  # lighter, so the flow of the step stands out


def to_dot(graph: Graph, tape=None, legend: bool = True) -> str:
    """DOT source for one step graph. `tape`: for a backward step, the
    forward values it reads (autodiff.saved_values); None for a forward one."""
    what = "one time step" if tape is None else "the backward step, derived by autodiff"
    dot = _digraph(graph.name, f"{graph.name}: {what}")
    drawn = _draw(dot, graph, tape, "")
    if legend:
        _legend(dot, drawn, tape is not None)
    return dot.source


def to_dot_clusters(name: str, parts, label: str | None = None, legend: bool = True) -> str:
    """DOT source for several step graphs, one cluster each: `parts` is a
    list of (title, graph, tape) as for `to_dot`."""
    dot = _digraph(name, label or name)
    drawn: set[str] = set()
    backward = False
    for k, (title, graph, tape) in enumerate(parts):
        with dot.subgraph(name=f"cluster_{k}") as sub:
            sub.attr(label=title, style="rounded", color="#999999", labeljust="l")
            drawn |= _draw(sub, graph, tape, f"c{k}_")
        backward = backward or tape is not None
    if legend:
        _legend(dot, drawn, backward)
    return dot.source


def _digraph(name: str, label: str) -> graphviz.Digraph:
    font = {"fontname": FONT}
    return graphviz.Digraph(
        name, graph_attr={"rankdir": "TB", "label": label, "labelloc": "t", "fontsize": "16",
                          "nodesep": "0.25", "ranksep": "0.35", **font},
        node_attr={"fontsize": "11", **font}, edge_attr={"fontsize": "9", "arrowsize": "0.7",
                                                        **font})


def roles(graph: Graph, tape=None) -> dict[str, str]:
    """Each value's role, a key of STYLES. `tape` as for `to_dot`."""
    backward = tape is not None
    saved = {v.name for v in tape or ()}
    params = {v.name for v in graph.params}
    role = {v.name: "param" for v in graph.params}
    for v in graph.inputs:
        if v.name in saved:
            role[v.name] = "tape"
        elif backward:  # the other inputs of a backward step are its seeds
            role[v.name] = "grad-in"
        else:
            role[v.name] = "state-prev" if v.name.endswith("<t-1>") else "input"
    for e in graph.eqns:
        name = e.out.name
        base = name[2:] if backward and name.startswith("d_") else name
        if _ANONYMOUS.fullmatch(name):
            role[name] = "temp"
        elif backward and base in params:
            role[name] = "param-grad"
        elif _other_step(name) in role and role[_other_step(name)] in ("state-prev", "grad-in"):
            role[name] = "grad-out" if backward else "state-new"
        else:
            role[name] = "named"
    return role


def _other_step(name: str) -> str:
    """`c<t>` for `c<t-1>` and back: the two ends of a recurrence edge."""
    if name.endswith("<t-1>"):
        return name[:-5] + "<t>"
    if name.endswith("<t>"):
        return name[:-3] + "<t-1>"
    return ""


def _draw(dot, graph: Graph, tape, prefix: str) -> set[str]:
    """Nodes and edges of `graph` into `dot`, ids prefixed; the roles drawn,
    and "recurrence" where a recurrence edge is."""
    role = roles(graph, tape)
    ids: dict[str, str] = {}
    outputs = {v.name for v in graph.outputs}

    def node(v: Var, label: str, where=dot) -> None:
        ids[v.name] = f"{prefix}n{len(ids)}"
        extra = {"peripheries": "2"} if v.name in outputs else {}
        cls = role[v.name] + (" output" if v.name in outputs else "")
        where.node(ids[v.name], label=label, **dict(STYLES[role[v.name]].attrs), **extra,
                   **{"class": cls, "tooltip": f"{v.name}: {v.type_str()}"})

    # A backward step lists every parameter, and reads few (not the biases).
    used = {a.name for e in graph.eqns for a in e.args if isinstance(a, Var)}
    with dot.subgraph() as top:  # what enters the step, in one row at the top
        top.attr(rank="min")
        for v in graph.inputs:
            if role[v.name] != "tape":
                node(v, _value_label(v), top)
    for v in graph.inputs + graph.params:
        if v.name not in ids and (role[v.name] != "param" or v.name in used):
            node(v, _value_label(v))
    for i, e in enumerate(graph.eqns):
        node(e.out, _eqn_label(e, role[e.out.name]))
        for j, a in enumerate(e.args):
            _edge(dot, ids, role, e, a, f"{prefix}lit{i}_{j}")
    drawn: set[str] = set()
    for e in graph.eqns:
        # The recurrence: drawn against the flow (constraint=false keeps the
        # layout top-down) from where a state is made to where it is read.
        other = _other_step(e.out.name)
        if e.out.name in outputs and other in ids and role[other] in ("state-prev", "grad-in"):
            dot.edge(ids[e.out.name], ids[other], style="dashed", constraint="false",
                     color="#38761d" if tape is None else "#990000", penwidth="1.5",
                     label="next step" if tape is None else "to step t-1",
                     **{"class": "recurrence"})
            drawn.add("recurrence")
    return drawn | {role[name] for name in ids}


def _edge(dot, ids, role, e: Eqn, a, lit_id: str) -> None:
    if isinstance(a, Lit):
        dot.node(lit_id, label=graphviz.nohtml(str(a)), shape="plaintext", fontsize="9",
                 **{"class": "literal"})
        dot.edge(lit_id, ids[e.out.name])
        return
    kind = role[a.name]
    attrs = {"color": TAPE_EDGE, "class": "tape-read"} if kind == "tape" else \
        {"color": PARAM_EDGE} if kind == "param" else {}
    dot.edge(ids[a.name], ids[e.out.name], **attrs)


def _h(text: str) -> str:
    return html.escape(text, quote=False)


def _value_label(v: Var) -> str:
    """`Wu  H×(H+X)`: the name in bold, then the shape (B×: one per example)."""
    return f"<<B>{_h(v.name)}</B>  {_h(v.type_str())}>"


def _op(e: Eqn) -> str:
    # `cols` says which block of a concatenation a transposed product gives
    # back; `of=` only names the parameter, which the edges show already.
    return e.op + "".join(f"[{lo}:{hi}]" for k, (lo, hi) in
                          ((k, v) for k, v in e.attrs if k == "cols"))


def _eqn_label(e: Eqn, role: str) -> str:
    if role == "temp":
        return (f"<{_h(_op(e))}<BR/><FONT POINT-SIZE=\"8\" COLOR=\"#666666\">"
                f"{_h(e.out.name)}  {_h(e.out.type_str())}</FONT>>")
    return (f"<<B>{_h(e.out.name)}</B>  {_h(e.out.type_str())}<BR/>"
            f"<FONT POINT-SIZE=\"9\" COLOR=\"#444444\"><I>{_h(_op(e))}</I></FONT>>")


def _legend(dot, drawn: set[str], backward: bool) -> None:
    """One table of the roles drawn, each in its own colours."""
    rows = []
    for name, style in STYLES.items():
        if name in drawn:
            rows.append(f'<TR><TD BGCOLOR="{style.fill}" BORDER="1" COLOR="#999999">'
                        f'{_h(style.legend)}</TD></TR>')
    if "recurrence" in drawn:
        rows.append(f"<TR><TD>{_h(LEGEND_RECURRENCE[backward])}</TD></TR>")
    rows.append("<TR><TD>double border: an output of the step</TD></TR>")
    table = ('<<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="3"><TR><TD><B>legend</B></TD>'
             f"</TR>{''.join(rows)}</TABLE>>")
    dot.node("legend", label=table, shape="plaintext", fontsize="9", **{"class": "legend"})
