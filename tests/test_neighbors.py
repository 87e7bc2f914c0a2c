"""core.neighbors and core.cell_memo: one neighbour list per structure content, equal to pymatgen's."""
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from core import neighbors
from core.cell_memo import Cell, CellMemo


def rock_salt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_list_equals_pymatgens_and_knows_rock_salt_geometry():
    s = rock_salt(5.64)
    s.perturb(0.1, seed=1)
    pairs = neighbors.neighbor_list(s, 6.0)
    centres, points, images, distances = s.get_neighbor_list(6.0)
    assert np.array_equal(pairs.centres, centres) and np.array_equal(pairs.neighbours, points)
    assert np.array_equal(pairs.images, images) and np.array_equal(pairs.distances, distances)
    ideal = neighbors.neighbor_list(rock_salt(5.64), 3.0)
    assert np.allclose(ideal.nearest, 2.82)                                  # a/2
    assert np.all(np.bincount(ideal.centres) == 6)                           # octahedral
    assert neighbors.neighbor_list(rock_salt(5.64), 2.0).nearest.tolist() == [np.inf] * 8   # nothing within 2 Å


def test_memo_follows_content_and_lists_are_read_only():
    s = rock_salt()
    first = neighbors.neighbor_list(s)
    assert neighbors.neighbor_list(s.copy()) is first       # same content, another object: same answer
    with pytest.raises(ValueError):
        first.distances[0] = 0.0
    s.apply_strain(0.05)                                   # edited in place: a new key, a new list
    assert neighbors.neighbor_list(s).nearest.min() == pytest.approx(5.64 * 1.05 / 2)
    single = Structure(Lattice.cubic(2.5), ["Po"], [[0, 0, 0]])
    assert neighbors.neighbor_list(single, 3.0).nearest[0] == pytest.approx(2.5)   # its own periodic image


def test_non_finite_cell_is_refused():
    bad = rock_salt()
    bad.lattice = Lattice(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        neighbors.neighbor_list(bad)


def test_cell_memo_evicts_by_count_and_by_weight():
    memo: CellMemo[list[int]] = CellMemo(3, weight=len, max_weight=10)
    calls = []
    for key, size in [("a", 2), ("b", 2), ("c", 2)]:
        memo.get(key, lambda size=size, key=key: calls.append(key) or [0] * size)
    memo.get("a", lambda: calls.append("a again") or [])
    assert calls == ["a", "b", "c"]                       # "a" was stored
    memo.get("d", lambda: [0] * 2)                        # four answers > 3: the least recently used ("b") goes
    memo.get("b", lambda: calls.append("b again") or [0] * 2)
    assert calls[-1] == "b again"
    memo.get("big", lambda: [0] * 9)                      # weight 9 + others > 10: older answers go, the newest stays
    assert memo.get("big", lambda: calls.append("big again") or []) == [0] * 9
    assert "big again" not in calls
    memo.clear()
    memo.get("a", lambda: calls.append("a after clear") or [])
    assert calls[-1] == "a after clear"


def test_cell_key_is_content():
    s = rock_salt()
    assert Cell.of(s).key == Cell.of(s.copy()).key
    t = s.copy()
    t.replace_species({"Cl": "Br"})
    assert Cell.of(t).key != Cell.of(s).key


def test_huge_cell_is_refused_before_the_search_and_min_distance_still_works():
    from core.scoring.metrics import min_interatomic_distance

    huge = Structure(Lattice.cubic(1.0e4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="huge cell"):
        neighbors.neighbor_list(huge)
    assert min_interatomic_distance(huge) == pytest.approx(1.0e4 * np.sqrt(3) / 2)


def test_collapsed_cell_is_refused_before_the_search_and_every_screen_says_why():
    """A generated cell of 20 atoms in 10^-5 Å³ would ask for ~10^10 pairs (tens of GB): refused at once."""
    from core.errors import ScoringError
    from core.scoring.metrics import min_interatomic_distance, structure_validity
    from core.scoring.mlip import check_structure
    from core.scoring.pipeline import score

    collapsed = Structure(Lattice([[1e-2, 0, 0], [0, 1e-2, 0], [0, 0, 0.1]]), ["Na", "Cl"] * 10,
                          np.random.default_rng(0).random((20, 3)))
    with pytest.raises(ValueError, match="too dense"):
        neighbors.neighbor_list(collapsed)
    with pytest.raises(ScoringError, match="too dense"):
        check_structure(collapsed, label="m", elements=None, cutoff_a=5.0)
    assert min_interatomic_distance(collapsed) < 0.01 and not structure_validity(collapsed)
    table = score([collapsed], hull=None, properties=False)
    assert "degenerate cell" in table.loc[0, "error"] and table.loc[0, "struct_valid"] == False  # noqa: E712
