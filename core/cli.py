"""Command-line interface: ``python -m core <command> ...``.

Each command lives next to the code it drives and registers itself through a
``register(subparsers)`` function; this module only collects them and turns the project's
typed errors into one readable line and a non-zero exit code (never a traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from core.errors import CrystalFormerError

# module path -> provides register(subparsers); imported lazily so `--help` stays fast
COMMAND_MODULES = (
    "core.commands.model_cli",     # sample, logp, export
    "core.commands.score_cli",     # score
    "core.commands.train_cli",     # train, rl
    "core.commands.screen_cli",    # screen
    "core.commands.trust_cli",     # trust
    "core.commands.shortlist_cli", # shortlist --check / --salvage
    "core.commands.download_cli",  # download
)

EXIT_INPUT = 2      # bad arguments or input files
EXIT_MISSING = 3    # a model / checkpoint / data file is absent
EXIT_CHECKPOINT = 4 # a checkpoint that cannot be used


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="CrystalFormer-RL: generate crystals by space group and score them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    from core.errors import CheckpointError, InvalidInputError, MissingResourceError
    try:
        return int(args.func(args) or 0)
    except MissingResourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except (InvalidInputError, CrystalFormerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
