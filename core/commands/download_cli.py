"""``python -m core download NAME... | --list``: fetch official checkpoints, the Alexandria hull and MLIP weights.

    python -m core download --list
    python -m core download alex20-base alex20-rl-ehull
    HF_ENDPOINT=https://hf-mirror.example python -m core download alex20-base    # any hub mirror

What can be fetched is ``core/catalogue.json``; ``core.download`` does the work (resume, hash check,
card stub). A failure prints one ``error:`` line with the URL and where to put the file by hand.
"""
from __future__ import annotations

import argparse
import sys


def _list(items) -> int:
    width = max(len(name) for name in items)
    for name, item in items.items():
        state = "installed" if item.installed() else "not installed"
        print(f"{name:<{width}}  {item.kind:<10} {state:<13} {item.title}")
        print(f"{'':<{width}}  -> {item.destination()}  [{item.licence}]")
    return 0


def _tqdm_progress(name: str):
    """A progress callback drawing a tqdm bar on stderr (bytes)."""
    from tqdm import tqdm

    bars: list = []   # made at the first byte count, so a failure before any transfer draws no empty bar

    def progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bars, progress


def run(args: argparse.Namespace) -> int:
    from core.download import catalogue_item, download, load_catalogue

    items = load_catalogue()
    if args.list or not args.names:
        return _list(items)
    chosen = [catalogue_item(name) for name in args.names]    # unknown names fail before anything is fetched
    for item in chosen:
        bars, progress = _tqdm_progress(item.name)
        try:
            result = download(item, progress=progress, force=args.force)
        finally:
            for bar in bars:
                bar.close()
        state = "already present" if result.already_present else f"sha256 checked against {result.checked_against}"
        print(f"{item.name}: {result.path} ({result.size_bytes / 1e6:.1f} MB, {state})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch official CrystalFormer checkpoints, the Alexandria hull, MLIP weights",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="catalogue names (see --list)")
    p.add_argument("--list", action="store_true", help="list what can be fetched, where it goes and its licence")
    p.add_argument("--force", action="store_true", help="download again even if installed")
    p.set_defaults(func=run)
