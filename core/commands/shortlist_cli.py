"""``python -m core shortlist``: check a shortlist file, or salvage every readable entry of a damaged one.

    python -m core shortlist --check                      (the app's shortlist; --db PATH for another)
    python -m core shortlist --db damaged.sqlite --salvage recovered.sqlite

Both work on a private copy: the file checked is never written.
"""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shortlist", help="check a shortlist database, or salvage the readable entries of a damaged one",
                       description="Check the shortlist SQLite file (integrity, entry count) or copy every readable "
                                   "entry of a damaged one into a new file. The file itself is never written.")
    p.add_argument("--db", default=None, help="shortlist file (default: the app's, under CFRL_APP_DATA_DIR)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="run SQLite's integrity check and count entries")
    what.add_argument("--salvage", metavar="OUT", help="new shortlist file to copy every readable entry into")
    p.set_defaults(func=cmd_shortlist)


def cmd_shortlist(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core import settings
    from core.errors import InvalidInputError
    from core.shortlist import DB_NAME, salvage

    path = Path(args.db) if args.db else settings.app_data_dir() / DB_NAME
    report = salvage(path, args.salvage)
    for finding in report.findings:
        print(f"damage: {finding}", file=sys.stderr)
    print(report.summary())
    if args.check and (report.findings or report.unreadable):
        raise InvalidInputError(f"{path} is damaged: {report.summary()}; "
                                f"copy out what is readable with --salvage OUT")
    return 0
