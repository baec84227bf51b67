"""`seqdsl cache info|clear|prune`: the cache of compiled cells."""
from __future__ import annotations

from .common import EPILOG


def add_parser(sub) -> None:
    z = sub.add_parser("cache", help="show, clear or prune the cache of compiled cells",
                       description="info: where compiled cells are cached, how many and how "
                       "much space they take; clear: remove them all; prune: remove the least "
                       "recently used until the cache is within SIZE.", epilog=EPILOG)
    z.add_argument("action", choices=("info", "clear", "prune"))
    z.add_argument("--max-size", metavar="SIZE", help="prune's bound, e.g. 500M or 2G "
                   "(default: SEQDSL_CACHE_MAX_SIZE, else 1G)")
    z.set_defaults(run=run)


def run(args) -> int:
    from ..runtime.numba.cache import command
    print(command(args.action, args.max_size))
    return 0
