"""``python -m core score``: score structure files into a CSV or JSON table.

    python -m core score samples.extxyz --mlip m3gnet --relax --hull bundled --out scores.csv

Inputs (any mix, folders are searched one level deep): extended XYZ (``.extxyz``/``.xyz``, every
frame), CIF (``.cif``, every data block), pymatgen JSON (a Structure, a list of them), VASP
POSCAR/CONTCAR/``.vasp``, CSV tables with a ``cif`` column, zips of those, each optionally gzipped;
read with ``core.export.read_files``. A file or structure that cannot be read becomes a row with an
``error`` and the rest is scored; a missing path, or input that holds no readable structure at all,
stops with one clear line.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from core.errors import InvalidInputError


def _write(frame: Any, out: Path) -> None:
    name = out.name.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".json"):
        frame.to_json(out, orient="records", indent=1)
    elif name.endswith(".csv"):
        frame.to_csv(out, index=False)
    else:
        raise InvalidInputError(f"--out {out}: use a .csv or .json file name")


def run(args: argparse.Namespace) -> int:
    from core.export import read_files
    from core.scoring.metrics import summarize
    from core.scoring.pipeline import score
    from core.scoring.sanity import flag_notes

    if args.out is not None and not str(args.out).lower().endswith((".csv", ".json")):
        raise InvalidInputError(f"--out {args.out}: use a .csv or .json file name")
    records = read_files(args.inputs)
    training = None
    if args.training_set:
        training = [s for _, s in read_files(args.training_set) if isinstance(s, Structure)]
    total = len(records)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rscored {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    frame = score([item for _, item in records], mlip=args.mlip, relax=args.relax, hull=args.hull,
                  properties=not args.no_properties, device=args.device, training_set=training,
                  progress=progress, batch_size=args.batch_size, workers=_workers(args))
    frame.insert(0, "id", [label for label, _ in records][:len(frame)])
    if args.out is not None:
        _write(frame, Path(args.out))
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    else:
        frame.to_csv(sys.stdout, index=False)
    summary = summarize(frame)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in summary.items() if not (isinstance(v, float) and math.isnan(v)))
    print(f"summary ({total} structures): {shown}", file=sys.stderr)
    for line in flag_notes(frame):
        print(line, file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` command to ``python -m core``."""
    from core.scoring.hull import HULL_KINDS

    parser = subparsers.add_parser(
        "score", help="score structures: MLIP energy, E_hull, band gap, ε_elec, FoM, validity",
        description=__doc__.split("\n\n")[0] + " Inputs: extxyz, CIF files/folders, JSON of pymatgen structures.")
    parser.add_argument("inputs", nargs="+", help="structure files or folders (.extxyz, .cif, .json, POSCAR)")
    parser.add_argument("--mlip", default=None, help="interatomic potential (default: the project default, see core.scoring.mlip)")
    parser.add_argument("--relax", action="store_true", help="relax with the MLIP (FIRE, fmax 0.1 eV/Å, ≤ 500 steps)")
    parser.add_argument("--hull", default="bundled",
                        help=f"hull reference: {', '.join(HULL_KINDS)}, a path to entries JSON, or none (default bundled)")
    parser.add_argument("--no-properties", action="store_true", help="skip band gap, ε_elec and FoM")
    parser.add_argument("--training-set", nargs="+", default=None, help="structure files to judge novelty against")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per batched model call")
    parser.add_argument("--workers", default="auto",
                        help="processes scoring side by side: a number, or auto = one per CPU core on a CPU, 1 on a GPU")
    parser.add_argument("--out", default=None, help="output .csv or .json (default: CSV on stdout)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run_with_default_mlip)


def _workers(args: argparse.Namespace) -> int:
    from core.scoring.device import pick_torch_device
    from core.scoring.workers import default_workers

    if str(args.workers).strip().lower() == "auto":
        return default_workers(pick_torch_device(args.device))
    try:
        count = int(args.workers)
    except ValueError:
        count = 0
    if count < 1:
        raise InvalidInputError(f"--workers {args.workers}: give a positive number or auto")
    return count


def _run_with_default_mlip(args: argparse.Namespace) -> int:
    if args.mlip is None:
        from core.scoring.mlip import DEFAULT_MLIP

        args.mlip = DEFAULT_MLIP
    return run(args)
