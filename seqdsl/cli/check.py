"""`seqdsl check FILE`: parse and check a file; list what was inferred."""
from __future__ import annotations

from ..ir.graph import Size
from .common import EPILOG, load, table


def add_parser(sub) -> None:
    c = sub.add_parser("check", help="parse and check a .seq file; list inferred parameters",
                       description="Parse and check every cell and network of FILE. Lists each "
                       "inferred parameter with its shape, the size constraints the equations "
                       "impose, and warnings. Exit status 0 when clean, 1 on errors.",
                       epilog=EPILOG)
    c.add_argument("file", metavar="FILE")
    c.add_argument("--network", metavar="NAME", help="list only this network")
    c.set_defaults(run=run)


def _shape(shape: tuple[Size, ...]) -> str:
    return "×".join(s.paren() for s in shape) if len(shape) > 1 else str(shape[0])


def run(args) -> int:
    spec = load(args.file)
    out = []
    networks = spec.networks.values()
    if args.network is not None:
        networks = [spec.network(args.network)]
    for ct in spec.cells.values() if args.network is None else ():
        out.append(f"cell {ct.name}  ({args.file}:{ct.loc.line})")
        out.append("  inputs      " + ", ".join(f"{n}: {s}" for n, s in ct.inputs))
        states = [(n, s) for n, s in ct.states if not (ct.computed_output and n == ct.output)]
        out.append("  states      " + ", ".join(f"{n}: {s}" for n, s in states)
                   + ("" if ct.computed_output else f"   (output {ct.output})"))
        if ct.computed_output:
            size = dict(ct.states)[ct.output]
            out.append(f"  output      {ct.output}<t>: {size}   (computed at every step)")
        if ct.sizes:
            out.append("  sized       " + ", ".join(f"{n}: {s}" for n, s in ct.sizes.items()))
        out.append("  parameters")
        rows = []
        for name, v in ct.params.items():
            start = _start(ct.inits.get(name, ("default",)), len(v.shape))
            kind = "weight" if len(v.shape) == 2 else "scalar" if name in ct.scalars else "vector"
            rows.append((name, _shape(v.shape), kind, start))
        out += table(rows, indent=4)
        for c in ct.constraints:
            out.append(f"  constraint  input size {c} (required by line {c.loc.line}); "
                       f"instantiate it with that size")
    for nt in networks:
        out.append(f"network {nt.name}  ({args.file}:{nt.loc.line})  {nt.kind}")
        out.append("  inputs      " + ", ".join(
            f"{n}: {s}" + (" (one-hot token ids)" if k == "tokens" else "")
            for n, k, s in nt.inputs))
        for name, layer in nt.sequences.items():
            out.append(f"  {name} = {layer.text}   → {layer.out_size} per step")
        for h in nt.heads:
            out.append(f"  output {h.name}{'<t>' if h.per_step else ''}: {h.size}   "
                       f"({'every step' if h.per_step else 'each example’s last step'})")
        out.append("  parameters")
        out += table([(n, _shape(s), "weight" if len(s) == 2 else "vector")
                      for n, s in nt.params.items()], indent=4)
    print("\n".join(out))
    n_w = len(spec.warnings)
    print(f"ok: {len(spec.cells)} cell(s), {len(spec.networks)} network(s), "
          f"{n_w} warning{'s' if n_w != 1 else ''}")
    return 0


def _start(init: tuple, ndim: int) -> str:
    """How a parameter starts, as `check` lists it."""
    kind, *nums = init
    if kind == "default":
        return "random" if ndim == 2 else "zeros"
    if kind == "const":
        return f"= {nums[0]:g}"
    return f"~ {kind}" + (f"({', '.join(f'{a:g}' for a in nums)})" if nums else "")
