"""Shortlisted candidates as ready-to-run VASP input sets, to verify ML scores with DFT.

Per candidate one folder ``<name>/`` with, written by pymatgen's Materials Project input sets (the
settings behind MP's own energies and dielectric data, so results compare with MP and with the
scores' training data):

* ``1_relax/``: ``MPRelaxSet`` (PBE/PBE+U, 520 eV, ISIF 3, MP's U values and magnetic moments);
* ``2_static/``: ``MPStaticSet`` (total energy on a denser k-mesh) for E_hull against MP;
* ``3_dielectric/``: ``MPStaticSet(lepsilon=True)`` (DFPT, IBRION 8, LEPSILON, LPEAD) for ε_elec
  (``epsilon`` in vasprun.xml; MP's matbench_dielectric n = √ of its mean eigenvalue); the band gap comes
  from the static run;

each holding ``INCAR``, ``KPOINTS``, ``POSCAR`` and ``POTCAR.spec`` (the POTCAR symbols: POTCARs are
licensed with VASP and not available here; assemble them with ``pmg potcar`` or your VASP
installation). Steps 2 and 3 start from the candidate's structure; for a strict workflow copy
``1_relax/CONTCAR`` to their ``POSCAR`` first (written in ``README.txt``). A ``summary.csv`` at the top
lists every candidate with its scores, uncertainties and feasibility flags.

``dft_zip`` returns the same tree as zip bytes (for a download button); ``write_dft_inputs`` writes it to
disk. A candidate whose input set cannot be made (e.g. no structure) is listed in ``errors.txt``
instead of stopping the export.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.core import Structure

from core.errors import InvalidInputError
from core.export import _default_name, _safe_name, _structure_of, properties_csv

STEPS = ("1_relax", "2_static", "3_dielectric")
SUMMARY_KEYS = ("e_above_hull", "e_above_hull_mean", "e_above_hull_std", "band_gap_ev", "band_gap_ev_std",
                "eps_elec", "eps_elec_mean", "eps_elec_std", "fom_ev", "fom_ev_std", "fom_ev_lcb", "novel",
                "feasibility_failed", "feasibility_notes")
README = """DFT verification inputs written by CrystalFormer-RL Explorer (pymatgen Materials Project input sets).

Per candidate folder:
  1_relax/       MPRelaxSet: relax cell and positions (PBE/PBE+U as Materials Project)
  2_static/      MPStaticSet: total energy -> E_hull against MP; band gap
  3_dielectric/  MPStaticSet(lepsilon=True): DFPT electronic dielectric tensor (epsilon, no ionic part)

POTCAR files are not included (VASP licence): each folder has POTCAR.spec with the symbols; build the
POTCAR with `pmg potcar -s $(cat POTCAR.spec)` or from your VASP installation, in that order.
For a strict workflow copy 1_relax/CONTCAR to 2_static/POSCAR and 3_dielectric/POSCAR before running them.
"""


def input_sets(structure: Structure, dielectric: bool = True) -> dict[str, Any]:
    """step folder -> pymatgen input set (``STEPS``; without the dielectric step when ``dielectric=False``)."""
    from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet

    sets = {STEPS[0]: MPRelaxSet(structure), STEPS[1]: MPStaticSet(structure)}
    if dielectric:
        sets[STEPS[2]] = MPStaticSet(structure, lepsilon=True)
    return sets


def candidate_files(structure: Structure, dielectric: bool = True) -> dict[str, str]:
    """Relative path -> text of every input file of one candidate (``1_relax/INCAR``, ...).

    Raises:
        InvalidInputError: the structure cannot be turned into VASP inputs (message says why).
    """
    if not isinstance(structure, Structure) or len(structure) == 0 or not structure.is_ordered:
        raise InvalidInputError("needs an ordered pymatgen Structure with at least one site")
    files: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pymatgen notes about missing POTCAR directories; we write the spec
        try:
            for step, input_set in input_sets(structure, dielectric).items():
                for name, content in input_set.get_input_set(potcar_spec=True).items():
                    text = str(content)
                    files[f"{step}/{name}"] = text if text.endswith("\n") else text + "\n"
        except Exception as exc:  # noqa: BLE001 - e.g. an element without an MP POTCAR choice
            raise InvalidInputError(f"cannot make VASP inputs for {structure.composition.reduced_formula}: {exc}") from exc
    return files


def _properties_of(item: Any) -> dict[str, Any]:
    props = getattr(item, "properties", None)
    if props is None and isinstance(item, Mapping):
        props = item.get("properties", {k: v for k, v in item.items() if k != "structure"})
    return dict(props or {})


def _summary_row(folder: str, structure: Structure, item: Any, files: Mapping[str, str]) -> dict[str, Any]:
    from pymatgen.io.vasp import Incar, Kpoints

    props = _properties_of(item)
    relax = Incar.from_str(files[f"{STEPS[0]}/INCAR"])
    kpoints = Kpoints.from_str(files[f"{STEPS[1]}/KPOINTS"])
    row: dict[str, Any] = {
        "folder": folder, "formula": structure.composition.reduced_formula, "nsites": len(structure),
        "spacegroup": getattr(item, "spacegroup", None) or props.get("spacegroup"),
        "shortlist_id": getattr(item, "id", None), "source": getattr(item, "source", None),
        "potcars": " ".join(files[f"{STEPS[0]}/POTCAR.spec"].split()),
        "hubbard_u": "GGA+U" if relax.get("LDAU") else "GGA", "encut_ev": relax.get("ENCUT"),
        "static_kpoints": "x".join(str(k) for k in kpoints.kpts[0]),
    }
    for key in SUMMARY_KEYS:
        if key in props:
            row[key] = props[key]
    for key, value in props.items():
        if key.startswith("feasible_"):
            row[key] = value
    return row


def dft_files(items: Iterable[Any], names: Sequence[str] | None = None, dielectric: bool = True) -> dict[str, bytes]:
    """Relative path -> bytes of the whole export (candidate folders, ``summary.csv``, ``README.txt``,
    ``errors.txt`` when some candidate failed).

    ``items``: Structures, shortlist entries (their ``name``, e.g. ``0007_NaCl_sg225``, names the folder and
    their ``properties`` fill the summary), or dicts with a "structure" key (other keys: properties).
    """
    items = list(items)
    if names is not None and len(names) != len(items):
        raise InvalidInputError(f"{len(names)} names for {len(items)} structures")
    out: dict[str, bytes] = {"README.txt": README.encode()}
    rows, problems, used = [], [], set()
    for k, item in enumerate(items):
        structure = _structure_of(item)
        label = names[k] if names is not None else None
        if structure is None:
            problems.append(f"item {k + 1}{f' ({label})' if label else ''}: no structure")
            continue
        folder = base = _safe_name(label or _default_name(item, k, structure))
        n = 1
        while folder in used:
            n += 1
            folder = f"{base}_{n}"
        try:
            files = candidate_files(structure, dielectric)
        except InvalidInputError as exc:
            problems.append(f"item {k + 1} ({base}): {exc}")
            continue
        used.add(folder)
        out.update({f"{folder}/{path}": text.encode() for path, text in files.items()})
        rows.append(_summary_row(folder, structure, item, files))
    summary = pd.DataFrame(rows)
    out["summary.csv"] = properties_csv(summary) if len(summary) else b"folder\n"
    if problems:
        out["errors.txt"] = ("\n".join(problems) + "\n").encode()
    return out


def dft_zip(items: Iterable[Any], names: Sequence[str] | None = None, dielectric: bool = True) -> bytes:
    """The export of ``dft_files`` as zip bytes (one top folder ``dft_inputs/``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in dft_files(items, names, dielectric).items():
            archive.writestr(f"dft_inputs/{path}", data)
    return buffer.getvalue()


def write_dft_inputs(items: Iterable[Any], out_dir: str | Path, names: Sequence[str] | None = None,
                     dielectric: bool = True) -> Path:
    """Write the export under ``out_dir`` (created); returns the path of its ``summary.csv``."""
    out_dir = Path(out_dir)
    for path, data in dft_files(items, names, dielectric).items():
        target = out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out_dir / "summary.csv"

