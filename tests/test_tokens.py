"""Structure <-> tokens <-> string, against the reference loader's arrays and crystallography."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from conftest import FIXTURES
from core import wyckoff
from core.errors import InvalidInputError
from core.lattice import LATTICE_MASK, symmetrize
from core.tokens import CrystalTokens, stack


@pytest.fixture(scope="module")
def fixture_structures():
    if not (FIXTURES / "mini.csv").exists():
        pytest.skip("reference fixtures not found")
    cifs = list(pd.read_csv(FIXTURES / "mini.csv")["cif"]) + list(pd.read_csv(FIXTURES / "extra.csv")["cif"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(c, fmt="cif") for c in cifs]


def test_tokenizer_reproduces_reference_loader(fixture_structures, fixture_inputs):
    """48 crystals (space groups 1 … 229): the same G, W, A exactly, XYZ and normalised L to 1e-5."""
    arrays = stack([CrystalTokens.from_structure(s) for s in fixture_structures])
    for key in ("G", "W", "A"):
        np.testing.assert_array_equal(arrays[key], fixture_inputs[key], err_msg=key)
    np.testing.assert_allclose(arrays["XYZ"], fixture_inputs["XYZ"], atol=1e-5)
    np.testing.assert_allclose(arrays["L"], fixture_inputs["L"], atol=1e-5)


def test_structure_round_trip(fixture_structures):
    matcher = StructureMatcher()
    for s in fixture_structures:
        tokens = CrystalTokens.from_structure(s)
        assert matcher.fit(s, tokens.to_structure())
        again = CrystalTokens.from_string(tokens.to_string(digits=6))
        assert matcher.fit(s, again.to_structure())


def test_string_form_of_lah10():
    """The issue's example: La on 4a, H on 8c and 32f of Fm-3m is the superhydride LaH10."""
    text = "225-a-La-0-0-0-c-H-1/4-1/4-1/4-f-H-0.375-0.375-0.375-5.1-5.1-5.1-90-90-90"
    tokens = CrystalTokens.from_string(text)
    assert tokens.to_string() == text
    s = tokens.to_structure()
    assert s.composition.reduced_formula == "LaH10"
    assert len(s) == 4 + 8 + 32
    assert SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number() == 225
    assert s.lattice.abc == pytest.approx((5.1, 5.1, 5.1))


def test_rock_salt_tokens():
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    t = CrystalTokens.from_structure(nacl)
    assert t.spacegroup == 225
    assert [wyckoff.index_to_letter(w) for w in t.wyckoff] == ["a", "b"]
    assert t.num_atoms == 8
    arrays = t.to_arrays()
    # lengths normalised by N^(1/3) = 2, angles in radians
    np.testing.assert_allclose(arrays["L"], [2.82, 2.82, 2.82, np.pi / 2, np.pi / 2, np.pi / 2], atol=1e-5)
    assert CrystalTokens.from_arrays(**arrays).to_string() == t.to_string()


@pytest.mark.parametrize("text,message", [
    ("0-a-Na-0-0-0-5-5-5-90-90-90", "1..230"),
    ("231-a-Na-0-0-0-5-5-5-90-90-90", "1..230"),
    ("225-a-Xx-0-0-0-5-5-5-90-90-90", "unknown element"),
    ("225-m-Na-0-0-0-5-5-5-90-90-90", "no Wyckoff position"),
    ("225-a-Na-0-0-5-5-5-90-90-90", "expected"),
    ("225-a-Na-0-0-zero-5-5-5-90-90-90", "not a number"),
])
def test_bad_strings(text, message):
    with pytest.raises(InvalidInputError, match=message):
        CrystalTokens.from_string(text)


def test_impossible_lattice_is_reported():
    t = CrystalTokens.from_string("225-a-Na-0-0-0-5-5-5-90-90-90")
    t.lattice = np.array([-5.0, -5.0, -5.0, 90, 90, 90])
    with pytest.raises(InvalidInputError, match="impossible lattice"):
        t.to_structure()


def test_too_many_sites_is_rejected():
    t = CrystalTokens.from_string("1-" + "-".join(f"a-C-0.{i:02d}-0.5-0.5" for i in range(1, 22)) + "-9-9-9-90-90-90")
    with pytest.raises(InvalidInputError, match="at most 20"):
        t.to_arrays(21)


def test_wyckoff_tables_against_known_groups():
    t = wyckoff.tables()
    # Fm-3m: 4a 4b 8c 24d 24e 32f 48g 48h 48i 96j 96k 192l
    assert list(t.mult[224, 1:13]) == [4, 4, 8, 24, 24, 32, 48, 48, 48, 96, 96, 192]
    assert t.wmax[224] == 12 and t.wmax[0] == 1 and t.mult[0, 1] == 1
    assert t.dof0[224, 1] and not t.dof0[224, 5]         # 4a fixed, 24e (x,0,0) free
    assert list(t.fc_mask[224, 5]) == [True, False, False]
    # every general position's multiplicity is the group order in the conventional cell
    assert t.mult[224, 12] == 192 and t.mult[1, t.wmax[1]] == 2
    rows = wyckoff.wyckoff_table(225)
    assert (rows[0].letter, rows[0].site_symmetry, rows[0].multiplicity) == ("a", "m-3m", 4)
    assert wyckoff.spacegroup_label(225) == "225 Fm-3m (cubic)"


def test_lattice_constraints_per_crystal_system():
    raw = np.array([3.0, 4.0, 5.0, 80.0, 95.0, 110.0])
    assert list(symmetrize(2, raw)) == list(raw)
    assert list(symmetrize(14, raw)) == [3, 4, 5, 90, 95, 90]
    assert list(symmetrize(62, raw)) == [3, 4, 5, 90, 90, 90]
    assert list(symmetrize(139, raw)) == [3, 3, 5, 90, 90, 90]
    assert list(symmetrize(166, raw)) == [3, 3, 5, 90, 90, 120]
    assert list(symmetrize(225, raw)) == [3, 3, 3, 90, 90, 90]
    assert LATTICE_MASK.sum(1)[[0, 13, 61, 138, 165, 224]].tolist() == [6, 4, 3, 2, 2, 1]


def test_space_group_symbols_agree_with_pyxtal_for_all_230_groups():
    from pyxtal.symmetry import Group

    assert [wyckoff.spacegroup_symbol(g) for g in range(1, 231)] == [Group(g).symbol for g in range(1, 231)]
