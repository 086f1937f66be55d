"""The ``simdiff`` command: one front door, subcommands discovered from this package.

Each module ``simdiff/cli/<name>.py`` (not starting with ``_``) defines ``COMMAND``, ``HELP`` and
``register(parser)``. Modules import only the standard library at top level, so ``simdiff --help`` stays fast;
the handlers import torch, numba, mujoco and friends when they run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from simdiff import __version__

# Exceptions whose message is written for a user: printed without a traceback.
_USER_EXCEPTIONS = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError, NotADirectoryError)


def _command_modules() -> list:
    pkg_path = os.path.dirname(__file__)
    mods = []
    for info in sorted(pkgutil.iter_modules([pkg_path]), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simdiff",
        description="Diffusion models for robotics and scientific simulation.",
    )
    parser.add_argument("--version", action="version", version=f"simdiff {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full stack trace on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.COMMAND, help=mod.HELP, description=mod.HELP)
        mod.register(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _USER_EXCEPTIONS as exc:
        if args.traceback:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
