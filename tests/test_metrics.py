"""Generation metrics on hand-made cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.operations import SymmOp

from core.scoring.fom import figure_of_merit
from core.scoring.metrics import (
    NoveltyChecker,
    composition_validity,
    min_interatomic_distance,
    novelty_flags,
    relaxation_match,
    structure_validity,
    summarize,
    unique_flags,
)
from scoring_doubles import rocksalt


def cscl_type(a=3.3, species=("Na", "Cl")) -> Structure:
    return Structure(Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


# ---------------------------------------------------------------- validity


def test_min_distance_of_rock_salt_is_half_the_cube_edge():
    assert min_interatomic_distance(rocksalt(5.69)) == pytest.approx(5.69 / 2)


def test_overlapping_atoms_are_structurally_invalid():
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])   # 0.2 Å apart
    assert min_interatomic_distance(overlapping) == pytest.approx(0.2)
    assert not structure_validity(overlapping)
    assert structure_validity(rocksalt())


def test_overlap_through_the_periodic_boundary_and_with_own_image():
    across = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.01, 0, 0], [0.99, 0, 0]])     # 0.08 Å via the image
    assert min_interatomic_distance(across) == pytest.approx(0.08)
    assert not structure_validity(across)
    tiny = Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]])                               # atom 0.4 Å from its image
    assert min_interatomic_distance(tiny) == pytest.approx(0.4)
    assert not structure_validity(tiny)
    same_spot = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]])
    assert min_interatomic_distance(same_spot) == pytest.approx(0.0)


def test_nan_lattice_is_invalid_not_an_exception():
    nan = Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]])
    assert math.isnan(min_interatomic_distance(nan))
    assert not structure_validity(nan)


@pytest.mark.parametrize("formula,valid", [
    ("NaCl", True), ("Fe2O3", True), ("LiFePO4", True), ("CsPbI3", True),
    ("NaCl2", False), ("Na3Cl", False), ("MgO2Cl5", False),
    ("Cu3Au", True),    # all metals: an alloy counts as valid
    ("Si", True),       # single element
])
def test_composition_validity_is_smact_charge_balance(formula, valid):
    assert composition_validity(formula) is valid


# ---------------------------------------------------------------- uniqueness / novelty


def test_duplicates_are_not_unique_first_occurrence_is():
    nacl = rocksalt()
    supercell = nacl.copy()
    supercell.make_supercell([2, 1, 1])
    jiggled = nacl.copy()
    jiggled.perturb(0.02)
    kcl = rocksalt(6.29, ("K", "Cl"))
    cscl_nacl = cscl_type()          # same formula, different structure
    assert unique_flags([nacl, supercell, jiggled, kcl, cscl_nacl]) == [True, False, False, True, True]


def test_structure_from_the_training_set_is_not_novel():
    training = [rocksalt(5.69), rocksalt(6.29, ("K", "Cl")), cscl_type(4.1, ("Cs", "Cl"))]
    rotated_nacl = rocksalt(5.75)                    # same structure, slightly different cell
    rotated_nacl.apply_operation(SymmOp.from_axis_angle_and_translation([0, 0, 1], 30))
    generated = [rotated_nacl, cscl_type(), rocksalt(5.0, ("Li", "F"))]
    assert novelty_flags(generated, training) == [False, True, True]
    checker = NoveltyChecker(training)
    assert len(checker) == 3 and checker.is_novel(rocksalt(4.2, ("Mg", "O")))


def test_lazy_reference_builds_only_the_queried_formulas_and_answers_like_the_eager_one():
    training = {"Na4Cl4": lambda: rocksalt(5.69), "KCl": lambda: rocksalt(6.29, ("K", "Cl")),
                "CsCl": lambda: cscl_type(4.1, ("Cs", "Cl")), "broken": lambda: 1 / 0}
    built = []

    def loader(formula):
        def load():
            built.append(formula)
            return training[formula]()
        return load

    checker = NoveltyChecker.lazy([(f if f != "broken" else "NaCl", loader(f)) for f in training])
    assert len(checker) == 4 and built == []
    rotated = rocksalt(5.75)
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([0, 0, 1], 30))
    assert not checker.is_novel(rotated)                  # a NaCl query builds the NaCl members only
    assert set(built) <= {"Na4Cl4", "broken"} and "KCl" not in built
    assert checker.is_novel(rocksalt(4.2, ("Mg", "O"))) and checker.is_novel(cscl_type())
    assert built.count("Na4Cl4") == 1                     # built once, then kept
    eager = NoveltyChecker([training[f]() for f in ("Na4Cl4", "KCl", "CsCl")])
    queries = [rotated, cscl_type(), rocksalt(6.3, ("K", "Cl")), rocksalt(5.0, ("Li", "F"))]
    assert [checker.is_novel(q) for q in queries] == [eager.is_novel(q) for q in queries] == [False, True, False, True]


# ---------------------------------------------------------------- relaxation match


def test_relaxation_match_and_rmsd():
    generated = rocksalt(5.69)
    expanded = rocksalt(5.9)                    # only the volume changed: same structure, zero RMS
    assert relaxation_match(generated, expanded) == (True, pytest.approx(0.0, abs=1e-6))
    moved = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    shifted = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.55]])
    matched, rmsd = relaxation_match(moved, shifted)
    assert matched and 0 < rmsd < 0.5
    # rock salt -> CsCl type is a different structure: no match
    assert relaxation_match(generated, cscl_type()) == (False, None)


# ---------------------------------------------------------------- FoM and summary


def test_figure_of_merit():
    assert figure_of_merit(5.0, 2.0) == pytest.approx(10.0)
    assert figure_of_merit(4.0, -0.1) == 0.0
    assert math.isnan(figure_of_merit(None, 2.0)) and math.isnan(figure_of_merit(3.0, math.nan))


def test_summarize_rates():
    df = pd.DataFrame({
        "e_above_hull": [0.0, 0.05, 0.3, None],
        "unique": [True, True, False, None],
        "novel": [True, False, True, None],
        "struct_valid": [True, True, True, False],
        "comp_valid": [True, False, True, True],
        "relaxed": [True, True, False, False],
        "match_relaxed": [True, False, None, None],
        "rmsd_relaxed": [0.1, None, None, None],
        "fom_ev": [10.0, 2.0, None, None],
        "error": [None, None, None, "overlapping atoms"],
    })
    s = summarize(df)
    assert s["n_structures"] == 4
    # judged rows: 0 and 2 (row 1 has an invalid composition, row 3 failed): neither counts as stable
    assert s["n_judged"] == 2 and s["unjudged_share"] == pytest.approx(2 / 4)
    assert s["stability_rate"] == pytest.approx(1 / 2)
    assert s["sun_rate"] == pytest.approx(1 / 2)            # only row 0 is stable, unique and novel
    assert s["uniqueness"] == pytest.approx(2 / 3)
    assert s["novelty"] == pytest.approx(2 / 3)
    assert s["struct_validity"] == pytest.approx(3 / 4) and s["comp_validity"] == pytest.approx(3 / 4)
    assert s["validity"] == pytest.approx(2 / 4)
    assert s["match_rate"] == pytest.approx(1 / 2) and s["mean_rmsd"] == pytest.approx(0.1)
    assert s["error_rate"] == pytest.approx(1 / 4)
    assert s["mean_fom_ev"] == pytest.approx(6.0)
    no_training = summarize(df.assign(novel=[None] * 4))
    assert math.isnan(no_training["novelty"]) and math.isnan(no_training["sun_rate"])


def test_summarize_does_not_count_rows_the_hull_cannot_judge():
    """A model that moves to systems where the hull is blind (elements-only, partial) or to MLIP artefacts far
    below the hull gains no stable count: those rows are unjudged, and their share is reported."""
    df = pd.DataFrame({
        "e_above_hull": [0.0, -2.1, -0.5, 0.05, 0.3],
        "hull_coverage": ["full", "partial", "full", "elements-only", "completed"],
        "struct_valid": [True] * 5, "comp_valid": [True] * 5, "error": [None] * 5,
    })
    s = summarize(df)
    assert s["n_judged"] == 2 and s["unjudged_share"] == pytest.approx(3 / 5)   # rows 0 and 4
    assert s["stability_rate"] == pytest.approx(1 / 2)


def test_training_sources_name_every_training_structure_by_its_own_formula():
    from core.scoring.references import training

    sources = training.training_structure_sources()
    matbench, _ = training.load_matbench_dielectric()
    hulls = training.load_hull_structures()
    assert len(sources) == len(matbench) + len(hulls)
    key = lambda formula: Composition(formula).element_composition.reduced_formula  # noqa: E731
    for (formula, load), structure in zip(sources[::97], (matbench + hulls)[::97]):
        built = load()
        assert built == structure and key(formula) == key(structure.formula)
