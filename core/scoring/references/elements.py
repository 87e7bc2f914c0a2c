"""Starting structures for the elemental reference phases of the bundled convex hull.

Every element gets one or more candidate phases; each is relaxed with the MLIP that scores the
query and the lowest energy per atom becomes that element's reference (the phase diagram picks the
minimum automatically). Rules, in order:

1. **Diatomic molecular elements** (H, N, O, F, Cl, Br, I): a molecular crystal of X2 dimers in the
   α-N2 structure (Pa-3: four molecules on fcc sites along the four body diagonals), bond 2 × covalent
   radius, cell edge from a volume per molecule of 2 × (4/3)π r_vdW³ / 0.7 (close-packed van der Waals
   spheres: 45 Å^3 for N2 as in α-N2, 38 Å^3 for F2). Only the atom positions relax; the cell stays
   fixed, because the MLIPs carry no dispersion and a cell relaxation of a molecular crystal is
   ill-defined. A molecule alone in a box is out of the MLIPs' training distribution: M3GNet-MP-2021
   puts an isolated F2 0.48 eV/atom below MP's F2 crystal, while this crystal lands within 0.03.
2. **ASE reference crystal** (``ase.build.bulk(symbol)``: the experimental ground-state structure and
   lattice constant for most metals and semiconductors), relaxed with cell and positions.
3. **Elements ASE cannot build** (He, B, P, S, Mn, Ga, Se, Te, Pm, At, Rn, Fr, Ra, Pa, Pu): the simple prototypes fcc, bcc, hcp (ideal c/a), simple cubic and
   diamond, at a nearest-neighbour distance of 2 × covalent radius (2 × van der Waals radius for
   noble gases), each relaxed with cell and positions. Complex ground states (α-B, α-Mn, orthorhombic
   Ga, ...) are not among them, so these references lie a little above the true elemental ground
   state (MP's α-Mn is ~0.07 eV/atom below bcc Mn in PBE). The bundled reference also adds every
   elemental structure present in matbench_dielectric (Si, Ge, C, P, S, Se, Te, Hg, H2, N2, Cl2, Br2,
   I2 crystals), which cover several of these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, covalent_radii, vdw_radii
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

DIATOMIC = frozenset({"H", "N", "O", "F", "Cl", "Br", "I"})
NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn"})
PROTOTYPES = ("fcc", "bcc", "hcp", "sc", "diamond")
VDW_PACKING = 0.7   # packing fraction of van der Waals spheres in a molecular crystal


@dataclass(frozen=True)
class ElementCandidate:
    """One starting structure for an elemental reference phase."""

    label: str            # e.g. "ase-bulk-bcc", "prototype-fcc", "molecular-crystal-O2-Pa-3"
    structure: Structure
    relax_cell: bool      # False for molecules: positions only, fixed cell


def _to_structure(atoms: Atoms) -> Structure:
    structure = AseAtomsAdaptor.get_structure(atoms)
    for prop in list(structure.site_properties):
        structure.remove_site_property(prop)
    return structure


def _molecular_crystal(symbol: str) -> ElementCandidate:
    z = atomic_numbers[symbol]
    bond = 2.0 * covalent_radii[z]
    radius = vdw_radii[z] if math.isfinite(vdw_radii[z]) else 2.0 * covalent_radii[z]
    volume_per_molecule = 2.0 * (4.0 / 3.0) * math.pi * radius ** 3 / VDW_PACKING
    edge = (4.0 * volume_per_molecule) ** (1.0 / 3.0)
    x = bond / (2.0 * math.sqrt(3.0) * edge)   # (x, x, x) and (-x, -x, -x) are bond apart
    structure = Structure.from_spacegroup("Pa-3", Lattice.cubic(edge), [symbol], [[x, x, x]])
    return ElementCandidate(f"molecular-crystal-{symbol}2-Pa-3", structure, relax_cell=False)


def _prototype(symbol: str, kind: str) -> ElementCandidate:
    z = atomic_numbers[symbol]
    radius = vdw_radii[z] if symbol in NOBLE_GASES else covalent_radii[z]
    d = 2.0 * radius  # nearest-neighbour distance, Å
    lattice_constant = {"fcc": d * math.sqrt(2.0), "bcc": 2.0 * d / math.sqrt(3.0), "hcp": d, "sc": d,
                        "diamond": 4.0 * d / math.sqrt(3.0)}[kind]
    atoms = bulk(symbol, crystalstructure=kind, a=lattice_constant, c=lattice_constant * math.sqrt(8.0 / 3.0) if kind == "hcp" else None)
    return ElementCandidate(f"prototype-{kind}", _to_structure(atoms), relax_cell=True)


def element_candidates(symbol: str) -> list[ElementCandidate]:
    """Candidate starting structures for ``symbol`` (see the module docstring for the rules).

    Raises:
        ValueError: ``symbol`` is not a chemical element.
    """
    Element(symbol)  # raises ValueError for a non-element
    if symbol in DIATOMIC:
        return [_molecular_crystal(symbol)]
    try:
        atoms = bulk(symbol)
    except (ValueError, RuntimeError, KeyError):
        return [_prototype(symbol, kind) for kind in PROTOTYPES]
    return [ElementCandidate("ase-bulk-" + str(_ase_symmetry(symbol)), _to_structure(atoms), relax_cell=True)]


def _ase_symmetry(symbol: str) -> str:
    from ase.data import reference_states

    state = reference_states[atomic_numbers[symbol]] or {}
    return state.get("symmetry", "unknown")
