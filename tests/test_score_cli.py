"""``python -m core score``: input formats, output files, clear messages for missing/garbage input."""
from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from ase.io import write
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from core import cli
from core.scoring import hull, pipeline
from core.export import read_files
from scoring_doubles import FakeMLIP, FakePropertyModel, rocksalt

MU = {"Na": -1.31, "Cl": -1.84, "K": -1.11, "Br": -1.63, "Mg": -1.60, "O": -4.95}


@pytest.fixture
def inputs(tmp_path):
    """An extxyz with 2 frames, a CIF, a JSON list, a garbage CIF, all in one folder."""
    folder = tmp_path / "samples"
    folder.mkdir()
    write(folder / "a.extxyz", [AseAtomsAdaptor.get_atoms(rocksalt()), AseAtomsAdaptor.get_atoms(rocksalt(6.6, ("K", "Br")))],
          format="extxyz")
    rocksalt(4.2, ("Mg", "O")).to(filename=str(folder / "b.cif"))
    (folder / "c.json.gz").write_bytes(gzip.compress(json.dumps([rocksalt(5.8).as_dict()]).encode()))
    (folder / "d.cif").write_text("data_broken\n_cell_length_a nonsense\nloop_\n_atom_site_label\n")
    return folder


@pytest.fixture
def fake_models(monkeypatch, tmp_path):
    monkeypatch.setenv("CFRL_CACHE_DIR", str(tmp_path / "cache"))
    import core.scoring.mlip as mlip_module

    fake = FakeMLIP(dict(MU))
    monkeypatch.setattr(mlip_module, "load_mlip", lambda name=None, device=None, **kw: fake)
    monkeypatch.setattr(pipeline, "load_property_models",
                        lambda device=None: (FakePropertyModel(lambda s: 3.0), FakePropertyModel(lambda s: 2.0)))
    hull._REFERENCES.clear()
    return fake


def test_reads_extxyz_cif_json_and_reports_garbage(inputs, capsys):
    records = read_files([inputs])
    labels = [label for label, _ in records]
    assert labels[:2] == ["a.extxyz#1", "a.extxyz#2"] and "b.cif" in labels and "c.json" in labels
    formulas = {label: s.composition.reduced_formula for label, s in records if isinstance(s, Structure)}
    assert formulas == {"a.extxyz#1": "NaCl", "a.extxyz#2": "KBr", "b.cif": "MgO", "c.json": "NaCl"}
    broken = [s for label, s in records if label.startswith("d.cif")]
    assert broken and isinstance(broken[0], Exception) and "d.cif" in str(broken[0])


def test_missing_and_garbage_inputs_exit_with_one_line(tmp_path, capsys):
    assert cli.main(["score", str(tmp_path / "nope.extxyz"), "--hull", "none"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0] and "nope.extxyz" in err[0]
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_bytes(b"\x00\x01 definitely not xyz \xff")
    assert cli.main(["score", str(garbage), "--hull", "none"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "garbage.extxyz" in err[0]
    gz = tmp_path / "samples.json.gz"
    gz.write_bytes(b"not gzip at all")
    assert cli.main(["score", str(gz), "--hull", "none"]) == cli.EXIT_INPUT
    assert "not a gzip file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["score", str(empty)]) == cli.EXIT_INPUT
    assert "no structure files" in capsys.readouterr().err


def test_bad_output_name_is_refused(inputs, capsys):
    assert cli.main(["score", str(inputs / "b.cif"), "--out", "scores.xlsx"]) == cli.EXIT_INPUT
    assert ".csv or .json" in capsys.readouterr().err


def test_scores_a_folder_to_csv_and_json(inputs, tmp_path, fake_models, capsys):
    out_csv = tmp_path / "scores.csv"
    assert cli.main(["score", str(inputs), "--mlip", "fake", "--hull", "none", "--out", str(out_csv), "--quiet"]) == 0
    df = pd.read_csv(out_csv)
    assert list(df["id"]) == ["a.extxyz#1", "a.extxyz#2", "b.cif", "c.json", "d.cif"]
    assert list(df["formula"][:4]) == ["NaCl", "KBr", "MgO", "NaCl"]
    assert df["error"].isna().tolist() == [True, True, True, True, False]
    assert df["fom_ev"][:4].tolist() == pytest.approx([6.0] * 4)
    assert "summary" in capsys.readouterr().err
    out_json = tmp_path / "scores.json"
    assert cli.main(["score", str(inputs / "a.extxyz"), "--mlip", "fake", "--hull", "none", "--no-properties",
                     "--out", str(out_json), "--quiet"]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["formula"] for r in rows] == ["NaCl", "KBr"] and rows[0]["band_gap_ev"] is None


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["score", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--hull" in out and "--relax" in out and "--training-set" in out
    assert "--workers" in out


def test_workers_option(inputs, tmp_path, fake_models, capsys):
    """--workers 2 writes the table one process writes; a non-number is refused in one line."""
    tables = []
    for count in ("1", "2"):
        out = tmp_path / f"scores{count}.csv"
        assert cli.main(["score", str(inputs), "--mlip", "fake", "--hull", "none", "--batch-size", "1",
                         "--workers", count, "--out", str(out), "--quiet"]) == 0
        tables.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert cli.main(["score", str(inputs), "--mlip", "fake", "--workers", "many", "--quiet"]) == cli.EXIT_INPUT
    assert "--workers many" in capsys.readouterr().err
