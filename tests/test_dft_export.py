"""DFT-ready export: MP input sets per candidate that parse back with pymatgen, summary CSV, zip."""
from __future__ import annotations

import io
import zipfile
from types import SimpleNamespace

import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Incar, Kpoints, Poscar

from core.dft_export import STEPS, candidate_files, dft_zip, write_dft_inputs
from core.errors import InvalidInputError
from scoring_doubles import rocksalt


def hematite_like() -> Structure:
    """A small Fe-O cell: MP puts Fe oxides in GGA+U (U_Fe = 5.3 eV)."""
    return Structure(Lattice.cubic(4.3), ["Fe", "Fe", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_written_inputs_parse_back_with_pymatgen(tmp_path):
    entry = SimpleNamespace(name="0007_NaCl_sg225", structure=rocksalt(), id=7, source="upload", spacegroup=225,
                            properties={"e_above_hull": 0.01, "eps_elec": 2.4, "eps_elec_std": 0.1, "fom_ev": 12.0,
                                        "feasible_stable": True})
    summary = write_dft_inputs([entry, {"structure": hematite_like(), "fom_ev": 3.0}], tmp_path)
    folder = tmp_path / "0007_NaCl_sg225"
    for step in STEPS:
        incar = Incar.from_file(folder / step / "INCAR")
        kpoints = Kpoints.from_file(folder / step / "KPOINTS")
        poscar = Poscar.from_file(folder / step / "POSCAR")
        assert StructureMatcher().fit(poscar.structure, entry.structure)
        assert incar["ENCUT"] == 520 and all(k >= 1 for k in kpoints.kpts[0])
        assert (folder / step / "POTCAR.spec").read_text().split() == ["Na_pv", "Cl"]
        assert not (folder / step / "POTCAR").exists()
    relax = Incar.from_file(folder / "1_relax" / "INCAR")
    assert relax["ISIF"] == 3 and relax["NSW"] > 1
    dielectric = Incar.from_file(folder / "3_dielectric" / "INCAR")
    assert dielectric["LEPSILON"] is True and dielectric["IBRION"] == 8
    static = Incar.from_file(folder / "2_static" / "INCAR")
    assert static["NSW"] == 0 and "LEPSILON" not in static

    table = pd.read_csv(summary)
    assert table["folder"].tolist() == ["0007_NaCl_sg225", "002_FeO"]
    nacl, feo = table.iloc[0], table.iloc[1]
    assert nacl["hubbard_u"] == "GGA" and feo["hubbard_u"] == "GGA+U"
    assert nacl["eps_elec_std"] == pytest.approx(0.1) and bool(nacl["feasible_stable"]) is True
    assert feo["potcars"] == "Fe_pv O" and feo["fom_ev"] == pytest.approx(3.0)
    fe_incar = Incar.from_file(tmp_path / "002_FeO" / "1_relax" / "INCAR")
    assert fe_incar["LDAU"] is True and fe_incar["LDAUU"] == [5.3, 0]


def test_zip_holds_the_same_tree_and_reports_bad_items():
    data = dft_zip([rocksalt(), None, rocksalt()], dielectric=False)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        errors = archive.read("dft_inputs/errors.txt").decode()
        summary = pd.read_csv(io.BytesIO(archive.read("dft_inputs/summary.csv")))
        incar = Incar.from_str(archive.read("dft_inputs/001_NaCl/1_relax/INCAR").decode())
    assert "item 2: no structure" in errors
    assert summary["folder"].tolist() == ["001_NaCl", "003_NaCl"]
    assert {"dft_inputs/README.txt", "dft_inputs/001_NaCl/2_static/KPOINTS", "dft_inputs/003_NaCl/1_relax/POSCAR"} <= names
    assert not any("3_dielectric" in n for n in names)
    assert incar["IBRION"] == 2 and incar["NSW"] == 99


def test_bad_input_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="ordered pymatgen Structure"):
        candidate_files(Structure(Lattice.cubic(3), [], []))
    with pytest.raises(InvalidInputError, match="names"):
        dft_zip([rocksalt()], names=["a", "b"])
