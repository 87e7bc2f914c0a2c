"""Structures in and out of files: CIF, POSCAR, CIF zips, property CSVs, and reading user uploads.

Writing: ``cif`` (symmetrised with pymatgen's CifWriter where that round-trips, else P1), ``poscar``,
``cif_zip`` (one CIF per structure, for shortlist entries, samples or bare structures) and
``properties_csv``.

Reading: ``read_structures(data, filename)`` accepts CIF (several data blocks allowed), POSCAR/CONTCAR/
``*.vasp``, extended XYZ (several frames allowed), pymatgen JSON (one structure, a list, or an entry dict
holding one), CSV tables with a ``cif`` or ``structure`` column and zip archives of those. It never raises for a bad file: it returns the structures it could
read and one clear ``"<file>: <problem>"`` string per problem (empty, binary, too large, unparseable, no
periodic cell, unknown element, non-finite lattice, non-positive volume, overlapping atoms, too many sites).
Each structure read carries ``structure.properties["filename"]`` and ``["label"]`` (the file name, with
``#k`` appended when the file held several structures). ``read_files(paths)`` reads files and folders
(gzip too) into (label, Structure or Exception) records, ``read_paths(paths)`` into structures or one error.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import DummySpecies, Structure
from pymatgen.io.cif import CifParser, CifWriter
from pymatgen.io.vasp import Poscar

from core.errors import InvalidInputError
from core.structure_check import require_sane, structure_problem

#: Largest upload read (bytes); bigger files are refused with a message.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Most sites a read structure may have (the app scores and draws each one).
MAX_SITES = 1000
#: Closest two atoms may be (Å); closer means a broken file (duplicated or overlapping sites).
MIN_DISTANCE = 0.5
#: Most members read from one zip archive.
MAX_ZIP_MEMBERS = 500
#: Symmetry tolerance (Å) for symmetrised CIFs; small so a relaxed crystal is not idealised beyond recognition.
CIF_SYMPREC = 0.01

FORMATS = ("cif", "poscar", "extxyz", "json", "zip")


# ------------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------------
def check_structure(structure: Structure, max_sites: int = MAX_SITES) -> str | None:
    """What is wrong with ``structure`` for this app, or None if it is usable.

    Checks: at least one site, at most ``max_sites``; a finite lattice with a positive volume (Å^3);
    finite coordinates; real elements only; no two atoms closer than ``MIN_DISTANCE`` Å.
    """
    if not isinstance(structure, Structure):
        return f"not a pymatgen Structure ({type(structure).__name__})"
    if len(structure) == 0:
        return "no atoms"
    if len(structure) > max_sites:
        return f"{len(structure)} sites, more than the {max_sites} this app handles"
    matrix = structure.lattice.matrix
    if not np.isfinite(matrix).all():
        return "lattice is not finite (NaN or infinite values)"
    volume = float(np.linalg.det(matrix))
    if not abs(volume) > 1e-3:
        return f"cell volume {abs(volume):.3g} Å^3 is not positive (degenerate lattice)"
    if not np.isfinite(structure.frac_coords).all():
        return "atomic coordinates are not finite"
    problem = structure_problem(structure, max_sites=max_sites)   # the project's sanity gate (density, size)
    if problem is not None:
        return problem
    dummies = sorted({str(sp) for sp in structure.composition if isinstance(sp, DummySpecies)})
    if dummies:
        return f"unknown element symbol(s) {', '.join(dummies)}"
    dist = structure.get_neighbor_list(r=MIN_DISTANCE)[3]   # includes an atom's own periodic images
    if len(dist):
        return (f"atoms {float(dist.min()):.2f} Å apart (closer than {MIN_DISTANCE} Å: overlapping or "
                "duplicated sites)")
    return None


# ------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------
def _structure_of(item: Any) -> Structure | None:
    if isinstance(item, Structure):
        return item
    if isinstance(item, Mapping):
        item = item.get("structure")
        return item if isinstance(item, Structure) else None
    found = getattr(item, "structure", None)
    return found if isinstance(found, Structure) else None


def cif(structure: Structure, symprec: float | None = CIF_SYMPREC) -> str:
    """CIF text. With ``symprec`` (Å) the symmetrised conventional cell with its space group is written,
    provided it reads back as the same crystal (pymatgen StructureMatcher); otherwise the cell in P1."""
    require_sane(structure, "cannot write a CIF")   # CifWriter's symmetry search runs spglib
    if symprec:
        try:
            text = str(CifWriter(structure, symprec=symprec))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
            if len(back) == 1 and StructureMatcher().fit(back[0], structure):
                return text
        except Exception:  # symmetry search or symmetrised writing failed: fall back to P1
            pass
    return str(CifWriter(structure))


def poscar(structure: Structure) -> str:
    """VASP POSCAR text (species grouped, comment line = formula)."""
    if not isinstance(structure, Structure):
        raise InvalidInputError(f"poscar() needs a pymatgen Structure, got {type(structure).__name__}")
    if not structure.is_ordered:
        raise InvalidInputError("a POSCAR cannot hold partial occupancies; export this structure as CIF")
    ordered = structure.get_sorted_structure()
    return Poscar(ordered, comment=ordered.composition.reduced_formula).get_str()


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "structure"
    return name[:100]


def _default_name(item: Any, index: int, structure: Structure) -> str:
    name = getattr(item, "name", None)
    if isinstance(name, str) and name:
        return name
    label = structure.properties.get("label") if isinstance(structure.properties, dict) else None
    if label:   # an uploaded file's name: drop the extension ("upload.cif#2" -> "upload#2")
        label = re.sub(r"\.(cif|mcif|vasp|poscar|json|xyz|extxyz)(?=#|$)", "", label, flags=re.I)
    return f"{index + 1:03d}_{label or structure.composition.reduced_formula}"


def cif_zip(items: Iterable[Any], names: Sequence[str] | None = None,
            symprec: float | None = CIF_SYMPREC, render: Callable[[Any, Structure], str] | None = None) -> bytes:
    """A zip archive with one CIF per structure (see ``cif``).

    ``items`` may hold Structures, shortlist entries, samples, or dicts with a "structure" key. File names
    come from ``names``, else the item's ``name`` (``0007_NaCl_sg225``), else ``<n>_<formula>``; they are
    made file-system safe and unique. Items without a usable structure are listed in ``errors.txt``
    inside the archive instead of stopping the export. ``render(item, structure)`` writes one item's CIF
    text instead of ``cif(structure, symprec)`` (e.g. a cache: a symmetrised CIF takes ~75 ms).
    """
    items = list(items)
    if names is not None and len(names) != len(items):
        raise InvalidInputError(f"{len(names)} names for {len(items)} structures")
    buffer = io.BytesIO()
    used: set[str] = set()
    problems: list[str] = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for k, item in enumerate(items):
            structure = _structure_of(item)
            label = names[k] if names is not None else None
            if structure is None:
                why = getattr(item, "error", None) or "no structure"
                problems.append(f"item {k + 1}{f' ({label})' if label else ''}: {why}")
                continue
            base = _safe_name(label or _default_name(item, k, structure))
            name, n = f"{base}.cif", 1
            while name in used:
                n += 1
                name = f"{base}_{n}.cif"
            used.add(name)
            try:
                archive.writestr(name, render(item, structure) if render else cif(structure, symprec=symprec))
            except Exception as exc:
                problems.append(f"item {k + 1} ({base}): could not write CIF: {exc}")
        if problems:
            archive.writestr("errors.txt", "\n".join(problems) + "\n")
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    # JSON, not "a; b": a tag may itself hold "; ", and json.loads gives the list back
    if isinstance(value, (dict, list, tuple, set)):
        return json.dumps(list(value) if isinstance(value, (tuple, set)) else value, default=str, ensure_ascii=False)
    return value


def properties_csv(df: pd.DataFrame) -> bytes:
    """UTF-8 CSV of a property table (e.g. ``Shortlist.list()`` or scoring results), without the index.

    Columns holding structures or other objects are dropped; lists (tags) and dicts become JSON in one
    cell (``["a", "b; c"]``), so ``json.loads`` gives them back.
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"properties_csv() needs a pandas DataFrame, got {type(df).__name__}")
    out = df.copy()
    for col in list(out.columns):
        values = out[col]
        if values.dtype == object:
            if values.map(lambda v: isinstance(v, Structure) or hasattr(v, "as_dict")).any():
                out = out.drop(columns=col)
            else:
                out[col] = values.map(_csv_cell)
    return out.to_csv(index=False).encode("utf-8")


# ------------------------------------------------------------------------------------------------------
# Reading uploads
# ------------------------------------------------------------------------------------------------------
def _is_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:   # a multi-byte character cut at the end of the sample
            return False
    text_like = sum(b >= 32 or b in (9, 10, 13) for b in head)
    return text_like / max(len(head), 1) < 0.95


def detect_format(filename: str, text: str | None = None) -> str | None:
    """"cif" | "poscar" | "extxyz" | "json" | "zip" | "csv" from the file name, else from the content; None if unknown."""
    name = filename.lower().rsplit("/", 1)[-1]
    if name.endswith((".cif", ".mcif")):
        return "cif"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".vasp", ".poscar")) or "poscar" in name or "contcar" in name:
        return "poscar"
    if text is None:
        return None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "json"
    if re.search(r"^\s*data_", text, re.M) and "_cell_length_a" in text:
        return "cif"
    lines = stripped.splitlines()
    if len(lines) > 1 and lines[0].strip().isdigit() and "lattice=" in lines[1].lower():
        return "extxyz"
    if len(lines) >= 8:
        return "poscar"
    return None


def _cif_structures(text: str) -> tuple[list[Structure], list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser.from_str(text)
        try:
            structures = parser.parse_structures(primitive=False, on_error="ignore")
        except ValueError:
            structures = []
    problems = []
    for msg in parser.warnings:
        m = re.match(r"No structure parsed for section (\d+) in CIF\.\s*(.*)", msg, re.S)
        if m:
            detail = m.group(2).strip()
            if re.fullmatch(r"'[^']+'", detail):
                detail = f"missing CIF field {detail}"
            problems.append(f"data block {m.group(1)}: {detail or 'no structure'}")
    if not structures and not problems:
        problems.append("not a readable CIF: no data block with a cell and atom sites")
    return structures, problems


def _poscar_structures(text: str) -> tuple[list[Structure], list[str]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [Poscar.from_str(text).structure], []
    except Exception as exc:
        return [], [("not a readable POSCAR (expected a comment line, a scale factor, three lattice vectors, "
                     f"element symbols and counts, then coordinates; {type(exc).__name__}: {exc})")[:400]]


def _extxyz_structures(text: str) -> tuple[list[Structure], list[str]]:
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        frames = read(io.StringIO(text), index=":", format="extxyz")
    except Exception as exc:
        return [], [f"not a readable extended XYZ file ({type(exc).__name__}: {exc})"[:300]]
    structures, problems = [], []
    for k, atoms in enumerate(frames):
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            problems.append(f"frame {k + 1}: no periodic cell (add Lattice=\"...\" and pbc=\"T T T\")")
            continue
        structures.append(AseAtomsAdaptor.get_structure(atoms))
    if not frames:
        problems.append("no frames in this extended XYZ file")
    return structures, problems


def _json_structures(text: str) -> tuple[list[Structure], list[str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return [], [f"not valid JSON ({exc})"]
    items = data if isinstance(data, list) else [data]
    structures, problems = [], []
    for k, item in enumerate(items):
        where = f"item {k + 1}: " if isinstance(data, list) else ""
        if isinstance(item, dict) and isinstance(item.get("structure"), dict):
            item = item["structure"]                   # e.g. a ComputedStructureEntry
        if not (isinstance(item, dict) and "lattice" in item and "sites" in item):
            problems.append(f"{where}not a pymatgen Structure dict (needs 'lattice' and 'sites')")
            continue
        try:
            structures.append(Structure.from_dict(item))
        except Exception as exc:
            problems.append(f"{where}invalid pymatgen Structure ({type(exc).__name__}: {exc})"[:300])
    if not items:
        problems.append("empty JSON list")
    return structures, problems


def _csv_structures(text: str) -> tuple[list[Structure], list[str]]:
    """A table with a ``cif`` (CIF text) or ``structure`` (pymatgen dict) column, one structure per row."""
    try:
        frame = pd.read_csv(io.StringIO(text))
    except Exception as exc:
        return [], [f"not a readable CSV table ({type(exc).__name__}: {exc})"[:300]]
    column = "cif" if "cif" in frame else "structure" if "structure" in frame else None
    if column is None:
        return [], ["CSV needs a 'cif' or 'structure' column"]
    structures, problems = [], []
    for k, cell in enumerate(frame[column]):
        text = str(cell)
        found, trouble = (_cif_structures(text) if "_cell_length_a" in text
                          else _json_structures(text.replace("'", '"')))
        structures += found
        problems += [f"row {k + 1}: {p}" for p in trouble]
    return structures, problems


_READERS = {"csv": _csv_structures, "cif": _cif_structures, "poscar": _poscar_structures, "extxyz": _extxyz_structures,
            "json": _json_structures}


def _zip_structures(data: bytes, filename: str) -> tuple[list[Structure], list[str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist()
                   if not m.is_dir() and not m.filename.startswith("__MACOSX/")
                   and not m.filename.rsplit("/", 1)[-1].startswith(".")]
    except zipfile.BadZipFile:
        return [], [f"{filename}: not a readable zip archive"]
    structures: list[Structure] = []
    errors: list[str] = []
    if len(members) > MAX_ZIP_MEMBERS:
        errors.append(f"{filename}: {len(members)} files; only the first {MAX_ZIP_MEMBERS} are read")
        members = members[:MAX_ZIP_MEMBERS]
    budget = MAX_UPLOAD_BYTES * 5                      # total unpacked bytes read from one archive
    for member in members:
        name = f"{filename}/{member.filename}"
        if member.filename.lower().endswith(".zip"):
            errors.append(f"{name}: zip archives inside zip archives are not read")
            continue
        if member.filename == "errors.txt":              # written by cif_zip next to the CIFs
            continue
        if budget <= 0:
            errors.append(f"{filename}: more than {MAX_UPLOAD_BYTES * 5 / 2**20:.0f} MB unpacked; "
                          f"{member.filename} and later files not read")
            break
        try:
            with archive.open(member) as handle:      # read at most the limit, whatever the header claims
                content = handle.read(MAX_UPLOAD_BYTES + 1)
        except Exception as exc:
            errors.append(f"{name}: cannot unpack ({exc})")
            continue
        budget -= len(content)
        found, problems = read_structures(content, name)
        structures += found
        errors += problems
    if not members:
        errors.append(f"{filename}: empty zip archive")
    return structures, errors


def read_structures(data: bytes | str | None, filename: str, *, max_sites: int = MAX_SITES,
                    max_bytes: int | None = None) -> tuple[list[Structure], list[str]]:
    """Structures from one uploaded file, and one clear message per problem. Never raises for bad data.

    Args:
        data: the file's bytes (or text).
        filename: its name; the extension picks the format (.cif, .json, .xyz/.extxyz, .zip, POSCAR/CONTCAR/
            .vasp), else the content is sniffed.
        max_sites: structures with more sites are refused.
        max_bytes: larger files are refused (default ``MAX_UPLOAD_BYTES``, an upload limit; local files
            read by ``read_paths`` may be larger).
    """
    filename = str(filename or "upload")
    max_bytes = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    try:
        if data is None or len(data) == 0:
            return [], [f"{filename}: empty file"]
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > max_bytes:
            return [], [f"{filename}: {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB "
                         "limit for one file"]
        fmt = detect_format(filename)
        if fmt == "zip" or (fmt is None and data[:4] == b"PK\x03\x04"):
            return _zip_structures(data, filename)
        if _is_binary(data):
            return [], [f"{filename}: binary data, not a structure file (expected CIF, POSCAR, extended XYZ "
                        "or pymatgen JSON text)"]
        text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
        if not text.strip():
            return [], [f"{filename}: empty file"]
        fmt = fmt or detect_format(filename, text)
        if fmt is None:
            return [], [f"{filename}: unknown format (use .cif, POSCAR/CONTCAR/.vasp, .extxyz, .json or .csv)"]
        found, problems = _READERS[fmt](text)
    except Exception as exc:  # a reader failing in an unforeseen way must not stop a batch
        return [], [f"{filename}: could not be read ({type(exc).__name__}: {exc})"[:300]]

    errors = [f"{filename}: {p}" for p in problems]
    structures = []
    for k, structure in enumerate(found):
        label = filename if len(found) == 1 else f"{filename}#{k + 1}"
        problem = check_structure(structure, max_sites=max_sites)
        if problem:
            errors.append(f"{label}: {problem}")
            continue
        structure.properties = {**(structure.properties or {}), "filename": filename, "label": label}
        structures.append(structure)
    return structures, errors


# ------------------------------------------------------------------------------------------------------
# Reading files and folders (the one reader behind every command, training and the novelty reference)
# ------------------------------------------------------------------------------------------------------
def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The structure files named by ``paths``; a folder stands for its structure files (one level deep).

    Raises:
        InvalidInputError: a path does not exist, or a folder holds no structure file.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InvalidInputError(f"input {path} not found")
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and detect_format(p.name.removesuffix(".gz")) is not None)
            if not found:
                raise InvalidInputError(f"folder {path} holds no structure files (.cif, .extxyz/.xyz, .json, .csv, .zip, POSCAR)")
            files.extend(found)
        else:
            files.append(path)
    return files


def read_files(paths: Iterable[str | Path], *, max_bytes: int | None = None,
               warn: bool = True) -> list[tuple[str, Structure | Exception]]:
    """(label, Structure or the reason it could not be read) for every structure in the input paths.

    Files are parsed by ``read_structures`` (CIF blocks, extxyz frames, JSON lists, CSV tables, zips);
    ``.gz`` files are decompressed first. Labels are the file name, ``#k`` (1-based) for multi-structure
    files. With ``warn`` each problem is also printed to stderr as a ``warning:`` line.

    Raises:
        InvalidInputError: a path does not exist, a folder holds no structure file, or nothing was readable.
    """
    records: list[tuple[str, Structure | Exception]] = []
    problems: list[str] = []
    for path in expand_paths(paths):
        data = path.read_bytes()
        name = path.name
        if name.lower().endswith(".gz"):
            try:
                data, name = gzip.decompress(data), name[:-3]
            except (OSError, EOFError) as exc:
                problems.append(f"{path.name}: not a gzip file ({exc})")
                records.append((path.name, InvalidInputError(problems[-1])))
                continue
        found, messages = read_structures(data, name, max_bytes=max_bytes)
        records.extend((str(s.properties.get("label", name)), s) for s in found)
        for message in messages:
            problems.append(message)
            records.append((message.split(": ", 1)[0], InvalidInputError(message)))
    if not any(isinstance(item, Structure) for _, item in records):
        raise InvalidInputError(f"no readable structure in the input: {'; '.join(problems) or 'no structures'}")
    if warn:
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
    return records


def read_paths(paths: Iterable[str | Path]) -> list[Structure]:
    """Every structure in the input paths, for inputs that must be read whole (training data, a novelty
    reference): local files, so no size limit.

    Raises:
        InvalidInputError: a path is missing, or any structure in it cannot be read (all problems named).
    """
    records = read_files(paths, max_bytes=2**62, warn=False)
    problems = [str(item) for _, item in records if not isinstance(item, Structure)]
    if problems:
        raise InvalidInputError(f"cannot read every structure: {'; '.join(problems)}"[:2000])
    return [item for _, item in records]
