"""core.symmetry: spglib space groups, memoised by cell content."""
from pymatgen.core import Lattice, Structure

from core import symmetry


def rock_salt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_known_space_groups():
    assert symmetry.space_group_number(rock_salt()) == 225
    cscl = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert symmetry.space_group_number(cscl) == 221
    # a tetragonal strain lowers Fm-3m to I4/mmm (139) once it exceeds the tolerance
    strained = Structure(Lattice.tetragonal(5.64, 6.2), rock_salt().species, rock_salt().frac_coords)
    assert symmetry.space_group_number(strained) == 139


def test_tolerance_matters_and_is_part_of_the_key():
    s = Structure(Lattice.tetragonal(5.64, 5.68), rock_salt().species, rock_salt().frac_coords)  # c 0.04 Å longer
    assert symmetry.space_group_number(s, 0.1) == 225
    assert symmetry.space_group_number(s, 0.01) == 139
    assert symmetry.space_group_number(s) == 225          # default tolerance 0.1 Å


def test_cache_follows_content_not_identity():
    s = rock_salt()
    assert symmetry.space_group_number(s) == 225
    s.replace_species({"Cl": "Na"})       # edited in place: Na on every site of the NaCl cell = simple cubic a/2
    assert symmetry.space_group_number(s) == 221
    assert symmetry.space_group_number(s.copy()) == 221
    s.apply_strain([0.0, 0.0, 0.1])       # stretched along c: tetragonal
    assert symmetry.space_group_number(s) == 123


def test_cells_no_finder_can_read_give_none_not_an_error():
    overlapping = Structure(Lattice.cubic(3.0), ["Na", "Na"], [[0, 0, 0], [0.0001, 0, 0]])
    result = symmetry.space_group_number(overlapping)
    assert result is None or 1 <= result <= 230
    flat = Structure(Lattice([[3, 0, 0], [0, 3, 0], [0, 0, 1e-9]]), ["Na"], [[0, 0, 0]])
    assert symmetry.space_group_number(flat) is None


def test_moyo_failure_falls_back_to_spglib(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("Primitive symmetry search failed")

    monkeypatch.setattr(symmetry, "_moyo_number", broken)
    symmetry.clear_cache()
    assert symmetry.space_group_number(rock_salt(5.5)) == 225
