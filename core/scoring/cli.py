"""``python -m core score``: score structure files into a CSV or JSON table.

    python -m core score samples.extxyz --mlip m3gnet --relax --hull bundled --out scores.csv

Inputs (any mix, folders are searched one level deep): extended XYZ (``.extxyz``/``.xyz``, every
frame), CIF (``.cif``, every data block), JSON (a pymatgen Structure dict, a list of them, or a dict
of id -> Structure dict; ``.json`` or ``.json.gz``), and VASP POSCAR/CONTCAR/``.vasp``. A file or
frame that cannot be read becomes a row with an ``error`` and the rest is scored; a missing path, or
input that holds no readable structure at all, stops with one clear line.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from core.errors import InvalidInputError

STRUCTURE_SUFFIXES = (".extxyz", ".xyz", ".cif", ".json", ".json.gz", ".vasp", ".poscar")
VASP_NAMES = ("POSCAR", "CONTCAR")


def _is_structure_file(path: Path) -> bool:
    name = path.name
    return name.lower().endswith(STRUCTURE_SUFFIXES) or name.startswith(VASP_NAMES)


def _read_xyz(path: Path) -> list[tuple[str, Structure | Exception]]:
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = read(path, index=":", format="extxyz")
    out: list[tuple[str, Structure | Exception]] = []
    for i, atoms in enumerate(frames):
        label = f"{path.name}#{i}"
        if not atoms.pbc.any() or atoms.cell.rank < 3:
            out.append((label, InvalidInputError(f"{label}: frame has no 3-D periodic cell")))
            continue
        out.append((label, AseAtomsAdaptor.get_structure(atoms)))
    return out


def _read_cif(path: Path) -> list[tuple[str, Structure | Exception]]:
    from pymatgen.io.cif import CifFile, CifParser

    blocks = CifFile.from_file(path).data
    if not blocks:
        raise InvalidInputError(f"{path}: no CIF data block")
    out: list[tuple[str, Structure | Exception]] = []
    for key, block in blocks.items():
        label = f"{path.name}#{key}" if len(blocks) > 1 else path.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structures = CifParser.from_str(str(block)).parse_structures(primitive=False, on_error="raise")
            out.extend((label, structure) for structure in structures)
        except Exception as exc:  # noqa: BLE001 - one bad block is one error row
            out.append((label, InvalidInputError(f"{label}: unreadable CIF block ({type(exc).__name__}: {exc})")))
    return out


def _read_json(path: Path) -> list[tuple[str, Structure | Exception]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        data = json.load(fh)
    if isinstance(data, dict) and "lattice" in data and "sites" in data:
        items: list[tuple[str, Any]] = [(path.name, data)]
    elif isinstance(data, dict):
        items = [(f"{path.name}#{key}", value) for key, value in data.items()]
    elif isinstance(data, list):
        items = [(f"{path.name}#{i}", value) for i, value in enumerate(data)]
    else:
        raise InvalidInputError(f"{path}: JSON holds neither a Structure dict nor a list/dict of them")
    out: list[tuple[str, Structure | Exception]] = []
    for label, value in items:
        try:
            out.append((label, Structure.from_dict(value["structure"] if isinstance(value, dict) and "structure" in value else value)))
        except Exception as exc:  # noqa: BLE001
            out.append((label, InvalidInputError(f"{label}: not a pymatgen Structure dict ({type(exc).__name__}: {exc})")))
    return out


def read_structure_file(path: Path) -> list[tuple[str, Structure | Exception]]:
    """(label, Structure or the reason it could not be read) for every structure in one file.

    Raises:
        InvalidInputError: the file as a whole cannot be parsed.
    """
    name = path.name.lower()
    try:
        if name.endswith((".extxyz", ".xyz")):
            return _read_xyz(path)
        if name.endswith(".cif"):
            return _read_cif(path)
        if name.endswith((".json", ".json.gz")):
            return _read_json(path)
        return [(path.name, Structure.from_file(path))]
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is "not a structure file"
        raise InvalidInputError(f"cannot read structures from {path}: {type(exc).__name__}: {exc}") from exc


def read_structures(paths: list[str | Path]) -> list[tuple[str, Structure | Exception]]:
    """Read every input path (files or folders). Unreadable files become error entries.

    Raises:
        InvalidInputError: a path does not exist, a folder holds no structure file, or nothing at all was readable.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InvalidInputError(f"input {path} not found")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_structure_file(p))
            if not found:
                raise InvalidInputError(f"folder {path} holds no structure files ({', '.join(STRUCTURE_SUFFIXES)}, POSCAR)")
            files.extend(found)
        else:
            files.append(path)
    records: list[tuple[str, Structure | Exception]] = []
    problems: list[str] = []
    for path in files:
        try:
            records.extend(read_structure_file(path))
        except InvalidInputError as exc:
            problems.append(str(exc))
            records.append((path.name, exc))
    if not any(isinstance(item, Structure) for _, item in records):
        detail = "; ".join(problems) or "the inputs hold no structures"
        raise InvalidInputError(f"no readable structure in the input: {detail}")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return records


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
    from core.scoring.metrics import summarize
    from core.scoring.pipeline import score

    if args.out is not None and not str(args.out).lower().endswith((".csv", ".json")):
        raise InvalidInputError(f"--out {args.out}: use a .csv or .json file name")
    records = read_structures(args.inputs)
    training = None
    if args.training_set:
        training = [s for _, s in read_structures(args.training_set) if isinstance(s, Structure)]
    total = len(records)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rscored {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    frame = score([item for _, item in records], mlip=args.mlip, relax=args.relax, hull=args.hull,
                  properties=not args.no_properties, device=args.device, training_set=training,
                  progress=progress, batch_size=args.batch_size)
    frame.insert(0, "id", [label for label, _ in records][:len(frame)])
    if args.out is not None:
        _write(frame, Path(args.out))
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    else:
        frame.to_csv(sys.stdout, index=False)
    summary = summarize(frame)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in summary.items() if not (isinstance(v, float) and math.isnan(v)))
    print(f"summary ({total} structures): {shown}", file=sys.stderr)
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
    parser.add_argument("--out", default=None, help="output .csv or .json (default: CSV on stdout)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run_with_default_mlip)


def _run_with_default_mlip(args: argparse.Namespace) -> int:
    if args.mlip is None:
        from core.scoring.mlip import DEFAULT_MLIP

        args.mlip = DEFAULT_MLIP
    return run(args)
