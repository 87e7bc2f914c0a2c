"""Hull completion on demand: competing binaries for element pairs the reference lacks.

When a candidate's chemical system has an element pair {A, B} that is expected to form a compound
(``core.scoring.coverage``) but no reference compound holds it, E_hull is a lower bound. Completion
proposes likely A-B binaries by **prototype substitution** from the reference's own binary compounds
and relaxes them with the scoring MLIP, so the hull gains the phases a chemist would check first:

1. templates: every binary X-Y compound of the bundled set (``references.bundled``) of at most
   ``MAX_TEMPLATE_SITES`` atoms, mapped onto A-B both ways (X→A, Y→B and X→B, Y→A);
2. kept only when the substituted composition is charge neutral (SMACT, Pauling test, as
   ``coverage`` asks) and ranked by chemical similarity of the swaps: the Pettifor/Mendeleev-number
   distance |M(A) − M(X)| + |M(B) − M(Y)| (the ordering behind structure maps; small = likely), one
   candidate per (product formula, template formula, template cell size);
3. the ``budget`` best (≤ ``MAX_RELAXATIONS`` = 40 per system, shared over its missing pairs) are
   scaled to the new atoms' radii and relaxed with ``relax_many`` with the candidates' settings
   (FIRE + FrechetCellFilter, 0.1 eV/Å, ≤ 500 steps), then enter the hull like reference compounds
   (MP2020 corrections for MP-compatible MLIPs).

Results are cached per MLIP and pair under ``CFRL_CACHE_DIR/hull/completion/<mlip>/<A-B>.json`` (a pair
is the binary subsystem, so every system containing it reuses the work), and every completion returns a
report (``CompletionReport``) of what was added. Ternary candidates are not generated (stated, not
hidden: a ``full``/``completed`` hull can still miss a decisive ternary). A row whose missing pairs were
all searched is ``"completed"``; a pair whose candidates all failed keeps the row ``"partial"``.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymatgen.core import Composition, Element, Structure

from core import settings
from core.scoring.coverage import Coverage, classify, pair_name, smact_binary_exists

if TYPE_CHECKING:
    from core.scoring.mlip import MLIP

log = logging.getLogger(__name__)

MAX_RELAXATIONS = 40      # per chemical system, shared over its missing pairs
MAX_PER_PAIR = 12         # candidates relaxed for one pair at most
MAX_TEMPLATE_SITES = 16   # atoms in a template cell (keeps each relaxation cheap)
COMPLETION_RECIPE = "c1"  # names the rule above; a new rule gets a new cache folder
PREFIX = "completed-"     # entry ids of completion phases


@dataclass(frozen=True)
class Candidate:
    """A substituted binary: the template row, the swaps and the starting structure."""

    template: str               # bundled row name
    template_formula: str
    swaps: tuple[tuple[str, str], ...]   # ((X, A), (Y, B))
    distance: int               # Mendeleev-number distance of the swaps
    structure: Structure


@dataclass
class CompletionReport:
    """What completion added for one chemical system."""

    system: str
    missing_pairs: tuple[str, ...]
    added: list[dict[str, Any]] = field(default_factory=list)   # formula, template, swaps, energy, steps, converged
    failed: list[dict[str, Any]] = field(default_factory=list)  # formula, template, error
    relaxations: int = 0                                         # done in this call (0: all from the cache)

    def text(self) -> str:
        lines = [f"{self.system}: missing {', '.join(self.missing_pairs) or 'nothing'}; "
                 f"{len(self.added)} phases added, {len(self.failed)} failed, {self.relaxations} relaxed now"]
        lines += [f"  + {a['formula']} from {a['template_formula']} ({a['template']}), "
                  f"{a['energy_per_atom']:.3f} eV/atom, {a['steps']} steps{'' if a['converged'] else ', not converged'}"
                  for a in self.added]
        return "\n".join(lines)


def _mendeleev(symbol: str) -> int:
    number = Element(symbol).mendeleev_no
    return int(number) if number is not None else 200


def _radius(symbol: str) -> float:
    radius = Element(symbol).atomic_radius
    return float(radius) if radius is not None else 1.5


def substituted(template: Structure, mapping: dict[str, str]) -> Structure:
    """``template`` with elements replaced by ``mapping`` and its volume scaled by Σ r_new³ / Σ r_old³
    (atomic radii), a starting guess the relaxation corrects."""
    structure = template.copy()
    old = sum(_radius(site.specie.symbol) ** 3 for site in template)
    structure.replace_species({Element(x): Element(a) for x, a in mapping.items()})
    new = sum(_radius(site.specie.symbol) ** 3 for site in structure)
    structure.scale_lattice(template.volume * new / old)
    return structure


def candidates(a: str, b: str, limit: int = MAX_PER_PAIR) -> list[Candidate]:
    """The ``limit`` most likely A-B binaries by prototype substitution (module docstring, steps 1-2)."""
    from core.scoring.references.bundled import load_bundled_compounds

    table = load_bundled_compounds()
    scored: dict[tuple[str, str, int], tuple[int, str, tuple[tuple[str, str], ...]]] = {}
    for row in table.rows:
        elements = table.element_sets[row]
        if len(elements) != 2 or elements == {a, b}:
            continue
        x, y = sorted(elements)
        cell = table.composition(row)
        if cell.num_atoms > MAX_TEMPLATE_SITES:
            continue
        for mapping in ({x: a, y: b}, {x: b, y: a}):
            composition = Composition({mapping[el.symbol]: n for el, n in cell.items()})
            if not _charge_neutral(composition):
                continue
            distance = sum(abs(_mendeleev(old) - _mendeleev(new)) for old, new in mapping.items())
            # one candidate per product formula and prototype (template formula and cell size)
            key = (composition.reduced_formula, cell.reduced_formula, int(cell.num_atoms))
            swaps = tuple(sorted(mapping.items()))
            if key not in scored or (distance, row) < scored[key][:2]:
                scored[key] = (distance, row, swaps)
    best = sorted(scored.values())[:limit]
    out = []
    for distance, row, swaps in best:
        template = table.structure(row)
        out.append(Candidate(row, template.composition.reduced_formula, swaps, distance, substituted(template, dict(swaps))))
    return out


def _charge_neutral(composition: Composition) -> bool:
    a, b = (el.symbol for el in composition.elements)
    return smact_binary_exists(a, b) and _smact_neutral(composition.reduced_formula)


@functools.lru_cache(maxsize=65536)
def _smact_neutral(reduced_formula: str) -> bool:
    from smact.screening import smact_validity

    try:
        return bool(smact_validity(Composition(reduced_formula), use_pauling_test=True, include_alloys=False,
                                   oxidation_states_set="smact14"))
    except (KeyError, ValueError, TypeError, IndexError):
        return False


# ---------------------------------------------------------------- cache


def cache_path(mlip: MLIP, pair: str) -> Path:
    from core.scoring.references.store import mlip_key

    return settings.cache_dir() / "hull" / "completion" / COMPLETION_RECIPE / mlip_key(mlip) / f"{pair}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


_LOCK = threading.RLock()


def complete_pair(pair: tuple[str, str], mlip: MLIP, budget: int = MAX_PER_PAIR,
                  progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Relaxed substitution candidates of one pair, from the cache or computed now:
    (added phases, failures, relaxations done now). Each phase holds its relaxed structure (dict)."""
    from core.scoring.relax import relax_many

    name = pair_name(pair)
    path = cache_path(mlip, name)
    with _LOCK:
        cached = _read(path)
        if cached is not None and cached.get("budget", 0) >= budget:
            return cached["added"], cached["failed"], 0
        chosen = candidates(*sorted(pair), limit=budget)
        if progress is not None:
            progress(f"completing {name}: relaxing {len(chosen)} substituted binaries with {getattr(mlip, 'label', mlip.name)}")
        results = relax_many([c.structure for c in chosen], mlip) if chosen else []
        added, failed = [], []
        for candidate, result in zip(chosen, results):
            about = {"formula": candidate.structure.composition.reduced_formula, "template": candidate.template,
                     "template_formula": candidate.template_formula, "swaps": [list(s) for s in candidate.swaps],
                     "distance": candidate.distance}
            if isinstance(result, BaseException):
                failed.append({**about, "error": str(result)[:300]})
                continue
            added.append({**about, "energy_ev": float(result.energy_ev), "energy_per_atom": float(result.energy_per_atom),
                          "steps": int(result.steps), "converged": bool(result.converged),
                          "structure": result.structure.as_dict()})
        _write(path, {"pair": name, "recipe": COMPLETION_RECIPE, "budget": budget, "added": added, "failed": failed})
        return added, failed, len(chosen)


def complete_system(elements: frozenset[str], missing_pairs: tuple[str, ...], mlip: MLIP,
                    max_relaxations: int = MAX_RELAXATIONS,
                    progress: Callable[[str], None] | None = None) -> CompletionReport:
    """Complete every missing pair of a system within ``max_relaxations`` relaxations in all."""
    report = CompletionReport("-".join(sorted(elements)), tuple(missing_pairs))
    if not missing_pairs:
        return report
    per_pair = max(1, min(MAX_PER_PAIR, max_relaxations // len(missing_pairs)))
    for name in missing_pairs:
        added, failed, done = complete_pair(tuple(name.split("-")), mlip, budget=per_pair, progress=progress)
        report.added.extend(added)
        report.failed.extend(failed)
        report.relaxations += done
    if progress is not None:
        progress(report.text())
    return report


def completed_coverage(elements: frozenset[str], base_sets: list[set[str]], all_sets: list[set[str]]) -> Coverage:
    """``full`` if the reference alone covers the system, ``completed`` if completion phases fill every
    missing pair, else the remaining gap (``partial`` / ``elements-only``)."""
    base = classify(elements, base_sets)
    if base.kind == "full":
        return base
    after = classify(elements, all_sets)
    return Coverage("completed") if after.kind == "full" else after
