"""How completely a convex-hull reference covers a chemical system: ``full``, ``partial``, ``elements-only``.

Missing competing phases make E_hull too *low* (the candidate has fewer phases to decompose into), so
E_hull on an incompletely covered hull is a **lower bound**. The rule, applied per chemical system of
the candidate (its set of elements):

* an element **pair** {A, B} of the system *is expected to form a compound* when what can be known
  offline says so: a binary A-B compound is in matbench_dielectric (4,764 MP structures) or in the
  Materials Project / Alexandria entry sets of ``shared/data/hulls/``, or, when A or B is not a metal
  (pymatgen's ``Element.is_metal``), SMACT finds a charge-neutral binary A_x B_y (x, y ≤ 4, SMACT's
  "smact14" oxidation states, Pauling electronegativity test, alloys excluded). Metal-metal pairs are
  left to the offline knowledge because SMACT's negative metal oxidation states would "expect" Ti-Zr,
  Co-Ni or Li-Co compounds, which do not exist;
* a pair is *represented* when the reference holds at least one **binary** A-B compound. A ternary or
  higher compound containing A and B does not count: it is itself stable only relative to the A-B
  binaries, and without them the hull lacks the facets a candidate of the system decomposes into (a
  Cs2LiLuF6 entry does not stand in for LuF3);
* ``"elements-only"``: the reference holds no compound at all in the system (E_hull = E_form);
* ``"full"``: every expected pair is represented (single elements are always ``full``);
* ``"partial"``: some compounds, but at least one expected pair is not represented;
* ``"completed"`` (set by hull completion, ``core.scoring.hull``): the missing pairs were filled in by
  relaxed prototype-substitution candidates.

Limitations, stated: intermetallic pairs are expected only where a binary of them is known offline; ternary and higher competing phases are not required, so even ``full`` can
miss a decisive ternary.
"""
from __future__ import annotations

import functools
import gzip
import itertools
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from pymatgen.core import Composition, Element

COVERAGE_CLASSES = ("full", "partial", "elements-only", "completed")
JUDGED_COVERAGE = ("full", "completed")   # classes on which E_hull is not a lower bound
MAX_SUBSCRIPT = 4   # largest x, y of the binaries A_x B_y SMACT is asked about
SMACT_OXIDATION_STATES = "smact14"


@dataclass(frozen=True)
class Coverage:
    """Coverage class of a system and the expected element pairs the reference lacks (e.g. ("F-Lu",))."""

    kind: str
    missing_pairs: tuple[str, ...] = ()


def pair_name(pair: Iterable[str]) -> str:
    """``"F-Lu"``: the two symbols sorted alphabetically and joined by a hyphen."""
    return "-".join(sorted(pair))


@functools.lru_cache(maxsize=65536)
def smact_binary_exists(a: str, b: str) -> bool:
    """Whether SMACT finds a charge-neutral A_x B_y (x, y ≤ ``MAX_SUBSCRIPT``) passing the Pauling test."""
    from smact.screening import smact_validity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in itertools.product(range(1, MAX_SUBSCRIPT + 1), repeat=2):
            try:
                if smact_validity(Composition({a: x, b: y}), use_pauling_test=True, include_alloys=False,
                                  oxidation_states_set=SMACT_OXIDATION_STATES):
                    return True
            except (KeyError, ValueError, TypeError, IndexError):
                return False   # an element SMACT has no data for: nothing to say
    return False


def _hull_file_binaries() -> set[frozenset[str]]:
    """Element pairs of the *stable* binary entries (``is_stable``, on the DFT hull) of every entries file in
    ``shared/data/hulls``: the MP files also hold hypothetical, unstable binaries (e.g. Li-Co), which say
    nothing about compounds in nature."""
    from core import settings

    pairs: set[frozenset[str]] = set()
    for path in sorted((settings.data_dir() / "hulls").glob("*.json.gz")):
        try:
            with gzip.open(path, "rt") as fh:
                items = json.load(fh)
        except (OSError, ValueError):
            continue
        for item in items if isinstance(items, list) else ():
            if not (isinstance(item, dict) and item.get("is_stable") is True):
                continue
            composition = item.get("composition") if isinstance(item, dict) else None
            if composition is None and "structure" in item:
                composition = {site["species"][0]["element"]: 1 for site in item["structure"]["sites"]}
            if isinstance(composition, dict) and len(composition) == 2:
                pairs.add(frozenset(composition))
    return pairs


@functools.cache
def known_binary_pairs() -> frozenset[frozenset[str]]:
    """Element pairs of the binary compounds known offline (matbench_dielectric and the shared hull files)."""
    from core.scoring.references.matbench import load_matbench_dielectric

    pairs = {s for s in load_matbench_dielectric().element_sets.values() if len(s) == 2}
    pairs |= _hull_file_binaries()
    return frozenset(pairs)


def expected_pairs(elements: Iterable[str]) -> list[frozenset[str]]:
    """Element pairs of the system expected to form a compound (see the module docstring)."""
    known = known_binary_pairs()
    out = []
    for a, b in itertools.combinations(sorted(set(elements)), 2):
        pair = frozenset((a, b))
        ionic = not (Element(a).is_metal and Element(b).is_metal)
        if pair in known or (ionic and smact_binary_exists(a, b)):
            out.append(pair)
    return out


def classify(elements: Iterable[str], compound_element_sets: Iterable[Iterable[str]]) -> Coverage:
    """Coverage of the system ``elements`` by a reference whose compounds (≥ 2 elements) in the system
    have the given element sets."""
    elements = frozenset(elements)
    compounds = [frozenset(s) for s in compound_element_sets if len(set(s)) > 1]
    if len(elements) < 2:
        return Coverage("full")
    if not compounds:
        return Coverage("elements-only", tuple(pair_name(p) for p in expected_pairs(elements)))
    binaries = {c for c in compounds if len(c) == 2}
    missing = tuple(pair_name(p) for p in expected_pairs(elements) if p not in binaries)
    return Coverage("partial" if missing else "full", missing)
