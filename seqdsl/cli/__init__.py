"""The `seqdsl` command line: `main`, and the registry of commands (one
module each, with `add_parser` and `run`)."""
from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import SeqError
from . import (cache, check, compile, diagnose, export, gradcheck, graph, import_, report,
               sample, search, train)
from .common import EPILOG, TRACEBACK_HELP

# The commands, in the order `seqdsl --help` lists them.
COMMANDS = (check, graph, compile, gradcheck, diagnose, report, train, sample, search, export,
            import_, cache)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    _traceback_anywhere(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad argument (usage printed) or --help: a status, not a traceback
        return e.code if isinstance(e.code, int) else 2
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except SeqError as e:
        if args.traceback:
            raise
        if getattr(e, "missing_sizes", None):  # the API's own hint speaks of instantiate()
            e.hint = "pass " + " ".join(f"--size {s}=N" for s in e.missing_sizes)
        print(e.render(), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves first)
        if args.traceback:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in seqdsl, not in the input: say so in one line
        if args.traceback:
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); rerun with --traceback "
              "to see where, and please report it", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from the library (the cache's, say) as one line, like the CLI's own."""
    print(f"warning: {message}", file=sys.stderr)


def _traceback_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --traceback after any subcommand too. SUPPRESS keeps a
    subcommand from resetting the value given before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--traceback" not in sub._option_string_actions:
                    sub.add_argument("--traceback", action="store_true",
                                     default=argparse.SUPPRESS, help=TRACEBACK_HELP)
                _traceback_anywhere(sub)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqdsl", epilog=EPILOG,
        description="Recurrent cells and networks written as equations: check them, show "
                    "or draw their step graphs and derived backward steps, compile them to "
                    "Numba kernels, check their gradients, measure how gradients vanish over "
                    "time, train networks and sample from them, and convert weights to and "
                    "from PyTorch.")
    p.add_argument("--traceback", action="store_true", help=TRACEBACK_HELP)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
