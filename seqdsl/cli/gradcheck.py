"""`seqdsl gradcheck FILE`: a cell's gradients against finite differences."""
from __future__ import annotations

import math

from .common import (EPILOG, definition_args, instantiate_from_args, non_negative_int,
                     positive_int, size_args, table, tolerance)


def add_parser(sub) -> None:
    k = sub.add_parser("gradcheck", help="check a cell's or a network's gradients against "
                       "finite differences",
                       description="Run the cell forward and backward through time on random "
                       "weights, a random batch of variable-length sequences and a random "
                       "initial state, and compare every gradient with central finite "
                       "differences. With --network, the whole network with its loss (the "
                       "default loss of each output) against random targets, at most --entries "
                       "entries of each parameter. Prints the worst relative error per "
                       "parameter; exit status 0 when all are within the tolerance, 1 "
                       "otherwise.", epilog=EPILOG)
    k.add_argument("file", metavar="FILE")
    definition_args(k)
    size_args(k)
    k.add_argument("--steps", type=positive_int, default=5, metavar="T",
                   help="sequence length (5)")
    k.add_argument("--batch", type=positive_int, default=3, metavar="B", help="batch size (3)")
    k.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
    k.add_argument("--entries", type=non_negative_int, default=25, metavar="N",
                   help="a network's entries compared per parameter, drawn at random (25; "
                   "0: all)")
    k.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="floating-point type of the check (float64); the finite-difference "
                   "step and the default tolerance follow it")
    k.add_argument("--tolerance", type=tolerance, default=None, metavar="E",
                   help="largest relative error accepted (1e-6 in float64, 1e-2 in float32)")
    k.add_argument("--backend", choices=("numpy", "numba"), default="numpy",
                   help="check the reference interpreter (default) or the compiled code")
    k.set_defaults(run=run)


def run(args) -> int:
    from ..tools.gradcheck import tolerance as tolerance_for
    kind, definition, instance = instantiate_from_args(args, args.backend,
                                                       announce=args.backend == "numba")
    check = _network if kind == "network" else _cell
    errors, lengths = check(instance, args)
    tol = tolerance_for(args.dtype) if args.tolerance is None else args.tolerance
    bound = ", ".join(f"{k}={v}" for k, v in instance.sizes.items())
    print(f"gradcheck {definition.name} ({bound}; T={args.steps}, B={args.batch}, "
          f"lengths {lengths}; {args.dtype}, {args.backend}, central differences)")
    rows = [(name, f"{err:.2e}" if math.isfinite(err) else "not finite",
             "ok" if err <= tol else "FAIL") for name, err in errors.items()]
    print("\n".join(table([("gradient of", "worst rel. error", "")] + rows)))
    bad = [r[0] for r in rows if r[2] == "FAIL"]
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} gradients not within {tol:g}: {', '.join(bad)}")
        return 1
    print(f"ok: all {len(rows)} gradients within {tol:g}")
    return 0


def _cell(cell, args):
    from ..tools.gradcheck import gradcheck, random_problem
    pb = random_problem(cell, args.steps, args.batch, args.seed)
    return gradcheck(cell, pb), list(map(int, pb.lengths))


def _network(net, args):
    from ..tools.netcheck import gradcheck_network, random_network_problem
    pb = random_network_problem(net, args.steps, args.batch, args.seed)
    errors = gradcheck_network(net, pb, args.entries or None, args.seed)
    shown = {n: list(map(int, v)) for n, v in pb.lengths.items()}
    return errors, next(iter(shown.values())) if len(shown) == 1 else shown
