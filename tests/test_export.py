"""Export (CIF, CIF zip, POSCAR, CSV) and reading uploads: round trips and clear messages for bad files."""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.io import write as ase_write
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar

from core import export as E
from core import settings
from core.errors import InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore:Issues encountered while parsing CIF")

FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
MATCH = StructureMatcher()


def nacl(a: float = 5.64) -> Structure:
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4, FCC + [[(x + 0.5) % 1, y, z] for x, y, z in FCC])


def triclinic() -> Structure:
    return Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 78, 95, 112), ["Si", "O", "O"],
                     [[0.1, 0.2, 0.3], [0.4, 0.1, 0.7], [0.8, 0.6, 0.2]])


@pytest.fixture(scope="module")
def reference_crystals() -> pd.DataFrame:
    """16 pyxtal-made crystals in space groups from 1 to 229 (shared reference fixtures)."""
    path = settings.fixtures_dir() / "crystalformer" / "extra.csv"
    if not path.exists():
        pytest.skip(f"reference fixtures not found at {path} (set CFRL_FIXTURES_DIR)")
    return pd.read_csv(path)


def _zip_members(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


# ------------------------------------------------------------------------------------------------ writing
def test_cif_zip_round_trip_over_all_crystal_systems(reference_crystals):
    originals = [CifParser.from_str(c).parse_structures(primitive=False)[0] for c in reference_crystals["cif"]]
    members = _zip_members(E.cif_zip(originals))
    assert len(members) == len(originals) and "errors.txt" not in members
    for (name, text), original, sg in zip(sorted(members.items()), originals,
                                          reference_crystals["generated_spacegroup"]):
        back = CifParser.from_str(text).parse_structures(primitive=False)
        assert len(back) == 1 and MATCH.fit(back[0], original), name
        # written symmetrised: the CIF names the space group pyxtal generated the crystal in
        assert int(re.search(r"_symmetry_Int_Tables_number\s+(\d+)", text).group(1)) == sg, name


def test_cif_zip_names_entries_and_lists_items_without_structure():
    entries = [SimpleNamespace(name="0003_NaCl_sg225", structure=nacl()),
               SimpleNamespace(name="0003_NaCl_sg225", structure=nacl(5.7)),      # same name: made unique
               SimpleNamespace(structure=None, error="invalid Wyckoff combination"),
               {"structure": triclinic()}, triclinic()]
    members = _zip_members(E.cif_zip(entries))
    assert sorted(members) == ["0003_NaCl_sg225.cif", "0003_NaCl_sg225_2.cif", "004_SiO2.cif", "005_SiO2.cif",
                               "errors.txt"]
    assert "item 3: invalid Wyckoff combination" in members["errors.txt"]
    named = _zip_members(E.cif_zip([nacl()], names=["my crystal/1"]))
    assert list(named) == ["my_crystal_1.cif"]
    with pytest.raises(InvalidInputError):
        E.cif_zip([nacl()], names=["a", "b"])


def test_cif_symmetrised_and_p1_both_read_back():
    s = triclinic()
    for text in (E.cif(s), E.cif(s, symprec=None)):
        assert MATCH.fit(CifParser.from_str(text).parse_structures(primitive=False)[0], s)
    cubic = E.cif(nacl())
    assert "Fm-3m" in cubic and "_symmetry_Int_Tables_number   225" in cubic
    p1 = E.cif(nacl(), symprec=None)
    assert "P 1" in p1 or "P1" in p1


def test_poscar_round_trip_and_disorder_refused():
    s = triclinic()
    back = Poscar.from_str(E.poscar(s)).structure
    assert MATCH.fit(back, s) and np.allclose(back.lattice.abc, s.lattice.abc)
    assert E.poscar(s).splitlines()[0] == "SiO2"
    with pytest.raises(InvalidInputError, match="partial occupancies"):
        E.poscar(Structure(Lattice.cubic(3), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]]))


def test_properties_csv_flattens_lists_and_drops_structures():
    df = pd.DataFrame({"id": [1, 2], "formula": ["NaCl", "KBr"], "tags": [["salt", "cubic"], []],
                       "e_above_hull": [0.0, np.nan], "model": [{"mlip": "m3gnet"}, None],
                       "structure": [nacl(), nacl(6.6)]})
    back = pd.read_csv(io.BytesIO(E.properties_csv(df)))
    assert list(back.columns) == ["id", "formula", "tags", "e_above_hull", "model"]
    assert json.loads(back.loc[0, "tags"]) == ["salt", "cubic"] and back.loc[0, "e_above_hull"] == 0.0
    assert json.loads(back.loc[1, "tags"]) == []
    assert np.isnan(back.loc[1, "e_above_hull"]) and json.loads(back.loc[0, "model"]) == {"mlip": "m3gnet"}
    with pytest.raises(InvalidInputError):
        E.properties_csv([{"a": 1}])


# ------------------------------------------------------------------------------------------------ reading
def test_reads_each_upload_format():
    s = triclinic()
    two_blocks = E.cif(s) + "\n" + E.cif(nacl())
    frames = io.StringIO()
    ase_write(frames, [Atoms("Cu", cell=[2.5] * 3, pbc=True), Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]],
                                                                       cell=[5.6, 3, 3], pbc=True)], format="extxyz")
    entry = {"@class": "ComputedStructureEntry", "energy": -1.0, "structure": s.as_dict()}
    cases = {"two.cif": (two_blocks, 2), "POSCAR": (E.poscar(s), 1), "run3_CONTCAR": (E.poscar(s), 1),
             "x.vasp": (E.poscar(s), 1), "frames.extxyz": (frames.getvalue(), 2), "s.json": (s.to_json(), 1),
             "many.json": (json.dumps([s.as_dict(), nacl().as_dict()]), 2), "entry.json": (json.dumps(entry), 1),
             "no_extension": (E.cif(s), 1)}
    for name, (text, n) in cases.items():
        structures, errors = E.read_structures(text.encode(), name)
        assert errors == [] and len(structures) == n, (name, errors)
        assert all(st.properties["filename"] == name for st in structures)
    (first, _), _ = E.read_structures(two_blocks.encode(), "two.cif")
    assert MATCH.fit(first, s) and first.properties["label"] == "two.cif#1"


def test_zip_upload_reads_members_and_reports_bad_ones():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("good/a.cif", E.cif(nacl()))
        archive.writestr("POSCAR", E.poscar(triclinic()))
        archive.writestr("junk.cif", "not a cif")
        archive.writestr("__MACOSX/._a.cif", b"\x00\x05\x16\x07")
    structures, errors = E.read_structures(buf.getvalue(), "batch.zip")
    assert sorted(st.composition.reduced_formula for st in structures) == ["NaCl", "SiO2"]
    assert errors == ["batch.zip/junk.cif: not a readable CIF: no data block with a cell and atom sites"]
    back, errors = E.read_structures(E.cif_zip([nacl(), None]), "export.zip")   # our own export reads back
    assert len(back) == 1 and errors == []


def poscar_text(a="5 0 0", b="0 5 0", c="0 0 5", second="0.5 0.5 0.5") -> bytes:
    return f"test\n1.0\n{a}\n{b}\n{c}\nNa Cl\n1 1\ndirect\n0 0 0\n{second}\n".encode()


@pytest.mark.parametrize("name, data, message", [
    ("empty.cif", b"", "empty file"),
    ("blank.cif", b"  \n\t\n", "empty file"),
    ("random.cif", os.urandom(4096), "binary data"),
    ("photo.png", b"\x89PNG\r\n\x1a\n" + os.urandom(512), "binary data"),
    ("hello.cif", b"hello world", "not a readable CIF"),
    ("POSCAR", b"just some words\n", "not a readable POSCAR"),
    ("notes.txt", b"lorem ipsum", "unknown format"),
    ("broken.json", b"{'lattice': ", "not valid JSON"),
    ("other.json", b'{"name": "x"}', "not a pymatgen Structure dict"),
    ("molecule.xyz", b"2\n\nH 0 0 0\nH 0 0 0.74\n", "no periodic cell"),
    ("nan.vasp", poscar_text(a="nan 0 0"), "not finite"),
    ("flat.vasp", poscar_text(c="5 5 0"), "volume"),
    ("overlap.vasp", poscar_text(second="0.01 0 0"), "0.05 Å apart"),
    ("bad.zip", b"PK\x03\x04 truncated", "not a readable zip archive"),
])
def test_bad_uploads_give_one_clear_message(name, data, message):
    structures, errors = E.read_structures(data, name)
    assert structures == [] and len(errors) == 1
    assert errors[0].startswith(f"{name}: ") and message in errors[0], errors[0]


def test_structure_checks_overlap_unknown_element_and_size():
    overlapping = Structure(Lattice.cubic(5), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])
    assert "0.10 Å apart" in E.check_structure(overlapping)
    thin_cell = Structure(Lattice.orthorhombic(0.4, 5, 5), ["Na"], [[0, 0, 0]])   # an atom touches its own image
    assert "apart" in E.check_structure(thin_cell)
    tiny_cell = Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]])     # 0.064 Å^3 per atom: the gate refuses it
    assert "absurd density" in E.check_structure(tiny_cell)
    text = E.cif(nacl(), symprec=None).replace(" Na ", " Qq ").replace("Na0", "Qq0")
    _, errors = E.read_structures(text.encode(), "qq.cif")
    assert len(errors) == 1 and "unknown element" in errors[0]
    structures, errors = E.read_structures(E.cif(nacl()).encode(), "big.cif", max_sites=4)
    assert structures == [] and "8 sites, more than the 4" in errors[0]
    assert E.check_structure(nacl()) is None


def test_huge_upload_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(E, "MAX_UPLOAD_BYTES", 1000)
    structures, errors = E.read_structures(b"data_x\n" + b"#" * 5000, "huge.cif")
    assert structures == [] and "over the" in errors[0] and "limit" in errors[0]


def test_a_batch_of_mixed_files_never_raises():
    batch = [("ok.cif", E.cif(nacl()).encode()), ("junk.cif", os.urandom(300)), ("none.cif", None),
             ("text.json", "[1, 2]"), ("ok2.vasp", E.poscar(triclinic()).encode())]
    good, bad = [], []
    for name, data in batch:
        structures, errors = E.read_structures(data, name)
        good += structures
        bad += errors
    assert [st.properties["filename"] for st in good] == ["ok.cif", "ok2.vasp"]
    assert [e.split(":")[0] for e in bad] == ["junk.cif", "none.cif", "text.json", "text.json"]


def test_paths_read_whole_csv_tables_and_name_every_unreadable_structure(tmp_path):
    """``read_paths`` (training data, novelty references): a CSV with a ``cif`` column reads back, and a
    file with a broken structure stops with a message naming it rather than training on part of it."""
    import pandas as pd

    table = tmp_path / "set.csv"
    pd.DataFrame({"cif": [E.cif(nacl()), E.cif(nacl())], "n": [1.5, 1.6]}).to_csv(table, index=False)
    structures = E.read_paths([table])
    assert len(structures) == 2 and all(s.composition.reduced_formula == "NaCl" for s in structures)
    broken = tmp_path / "broken.cif"
    broken.write_text("data_broken\n_cell_length_a nonsense\n")
    with pytest.raises(InvalidInputError, match="broken.cif"):
        E.read_paths([table, broken])
    with pytest.raises(InvalidInputError, match="not found"):
        E.read_paths([tmp_path / "absent.cif"])
