"""How far to trust a score: committee and ensemble spreads, propagated to the figure of merit.

Three sources, one convention: every uncertain quantity ``q`` gets ``q_mean`` (the value used for
ranking) and ``q_std`` (one standard deviation, same unit), and the table keeps every member's value.

* **E_hull committee** (eV/atom): the same structures placed on the convex hull by several MLIPs
  (default ``COMMITTEE``: M3GNet-MP, CHGNet, SevenNet-0; each with its own reference hull, so each is
  self-consistent). ``e_above_hull_mean`` is the committee mean, ``e_above_hull_std`` the sample
  standard deviation (ddof=1) of the members that could score the structure, times
  ``SPREAD_SCALE["e_above_hull"]``. Energies are static: pass relaxed structures to judge relaxed
  candidates. The same model twice gives a spread of exactly 0.
* **ε_elec ensemble** (dimensionless): the shipped dielectric model is an average of LightGBM boosters
  trained with different seeds (bagged rows and features); each booster is a member. Any list of
  dielectric models (e.g. cross-validation fold models) can be the ensemble instead.
  ``eps_elec_mean`` is the model's own prediction (exp of the mean ln n, squared; the number the
  pipeline reports), ``eps_elec_std`` the members' sample standard deviation of ε times
  ``SPREAD_SCALE["eps_elec"]``.
* **FoM** = ε_elec × E_g (eV) with first-order propagation of independent errors:
  σ_FoM² = (E_g σ_ε)² + (ε σ_Eg)². The band-gap model (MEGNet) has no ensemble; its σ is an input
  (default 0, i.e. the FoM σ then reflects the ε_elec uncertainty only).

Ranking: ``rank(frame, by="mean")`` sorts by FoM, ``by="lcb"`` by the lower confidence bound
FoM − k σ_FoM, which prefers candidates that are good *and* trusted.

Raw spreads of a committee or seed ensemble are not calibrated errors: ``bench/uncertainty.py``
measures how they compare to real errors (held-out matbench_dielectric folds; MP DFT hulls) and
``SPREAD_SCALE`` holds the factor that makes 68 % of the errors fall within scale × spread there
(``bench/uncertainty.md``: Spearman ρ(spread, |error|) 0.60 for ε_elec and 0.47 for E_hull; the raw
ε spread is ~5× too small, the raw committee spread ~1.6×; errors are heavier-tailed than a Gaussian,
85-87 % within 2σ). The E_hull calibration uses DFT-relaxed MP structures: generated structures are
further from the training data, so read their σ as a lower bound.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from core.errors import InvalidInputError, ScoringError
from core.scoring.batching import isolate_failures

if TYPE_CHECKING:
    from core.scoring.hull import HullReference
    from core.scoring.mlip import MLIP

COMMITTEE = ("m3gnet", "chgnet", "sevennet")
#: spread → calibrated σ: the 68th percentile of |error| / spread measured by bench/uncertainty.py
#: (ε_elec: 4,761 held-out matbench_dielectric rows, 5 folds; E_hull: 159 MP entries of two DFT hulls)
SPREAD_SCALE: dict[str, float] = {"e_above_hull": 1.58, "eps_elec": 4.76}
DEFAULT_LCB_K = 1.0
STD_SUFFIX = "_std"
UNCERTAIN_COLUMNS = ("e_above_hull_mean", "e_above_hull_std", "e_above_hull_n", "eps_elec_mean", "eps_elec_std",
                     "eps_elec_n", "band_gap_ev_std", "fom_ev_mean", "fom_ev_std", "fom_ev_lcb")


def member_spread(values: Sequence[float | None], scale: float = 1.0) -> tuple[float, float, int]:
    """(mean, scale × sample std (ddof=1), count) of the finite members; std 0 for one member, NaN for none."""
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), scale * std, int(finite.size)


# ------------------------------------------------------------------------------------------ E_hull committee
def _member_e_hull(structures: Sequence[Structure], mlip: MLIP, hull: str | HullReference) -> list[float]:
    """E_hull (eV/atom) of each structure with one MLIP on its own reference; NaN where it fails."""
    from core.scoring.hull import load_hull_reference
    from core.scoring.references.store import energy_predictor

    out = [math.nan] * len(structures)
    predictions = isolate_failures(energy_predictor(mlip), list(structures))  # one structure cannot sink the member
    ok = [i for i, p in enumerate(predictions) if not isinstance(p, BaseException) and math.isfinite(p.energy_ev)]
    if not ok:
        return out
    reference = hull if hasattr(hull, "e_above_hull_many") else load_hull_reference(hull, mlip)
    results = reference.e_above_hull_many([structures[i] for i in ok], [predictions[i].energy_ev for i in ok], mlip)
    for i, result in zip(ok, results):
        if not isinstance(result, BaseException):
            out[i] = float(result.e_above_hull)
    return out


def committee_e_above_hull(structures: Sequence[Structure], mlips: Sequence[str | MLIP] = COMMITTEE, *,
                           hull: str | HullReference | Callable[[MLIP], HullReference] = "bundled",
                           device: str | None = None, scale: float | None = None,
                           on_member: Callable[[str, str | None], None] | None = None) -> pd.DataFrame:
    """E_hull (eV/atom) of each structure by every committee member, with mean ± spread.

    Args:
        structures: the crystals (static energies: pass relaxed ones to judge relaxed candidates).
        mlips: registry names (``core.scoring.mlip.MLIP_NAMES``) or loaded MLIPs; a name that cannot be
            loaded (weights missing) is left out and reported through ``on_member``.
        hull: reference kind or path for ``load_hull_reference`` (each member on its own), a
            HullReference, or a function MLIP -> HullReference.
        device: torch device for the members.
        scale: spread factor (default ``SPREAD_SCALE["e_above_hull"]``).
        on_member: called ``(name, None)`` when a member finished, ``(name, reason)`` when it was skipped.

    Returns:
        One row per structure: ``e_above_hull_<member>`` per member, ``e_above_hull_mean``,
        ``e_above_hull_std`` and ``e_above_hull_n`` (members that scored it).

    Raises:
        ScoringError: no member could be loaded.
    """
    from core.scoring.mlip import load_mlip

    scale = SPREAD_SCALE["e_above_hull"] if scale is None else scale
    structures = list(structures)
    columns: dict[str, list[float]] = {}
    for k, member in enumerate(mlips):
        try:
            model = load_mlip(member, device=device) if isinstance(member, str) else member
        except Exception as exc:  # noqa: BLE001 - a missing model leaves the committee smaller
            if on_member:
                on_member(str(member), str(exc) or type(exc).__name__)
            continue
        name = str(model.name)
        key = f"e_above_hull_{name}" if f"e_above_hull_{name}" not in columns else f"e_above_hull_{name}_{k}"
        reference = hull(model) if callable(hull) else hull
        columns[key] = _member_e_hull(structures, model, reference)
        if on_member:
            on_member(name, None)
    if not columns:
        raise ScoringError("no committee member could be loaded: " + ", ".join(map(str, mlips)))
    frame = pd.DataFrame(columns)
    stats = [member_spread(row, scale) for row in frame.to_numpy()]
    frame["e_above_hull_mean"] = [s[0] for s in stats]
    frame["e_above_hull_std"] = [s[1] for s in stats]
    frame["e_above_hull_n"] = [s[2] for s in stats]
    return frame


# ------------------------------------------------------------------------------------------ ε_elec ensemble
def dielectric_members(structures: Sequence[Structure], model: Any = None) -> list[np.ndarray | Exception]:
    """ε_elec of every ensemble member per structure (array of members), or that structure's exception.

    ``model``: the shipped descriptor model (default) or any model with ``boosters`` and ``features``
    (members = boosters), or a sequence of dielectric models (members = models).
    """
    from core.scoring.dielectric import load_dielectric_model

    model = load_dielectric_model() if model is None else model
    structures = list(structures)
    if isinstance(model, Sequence):
        per_model = [m.predict(structures) for m in model]
        out: list[np.ndarray | Exception] = []
        for i in range(len(structures)):
            values = [p[i] for p in per_model]
            errors = [v for v in values if isinstance(v, BaseException)]
            out.append(errors[0] if len(errors) == len(values) else
                       np.array([float(v) for v in values if not isinstance(v, BaseException)]))
        return out
    if not hasattr(model, "boosters"):
        raise InvalidInputError(f"{getattr(model, 'label', model)} is a single model: give a list of models as the ensemble")
    results: list[Any] = list(model.features(structures))
    good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    if good:
        features = np.vstack([results[i] for i in good])
        log_n = np.vstack([booster.predict(features) for booster in model.boosters])   # (members, rows)
        eps = np.maximum(np.exp(log_n), 1.0) ** 2
        for column, i in enumerate(good):
            results[i] = eps[:, column]
    return results


def dielectric_ensemble(structures: Sequence[Structure], model: Any = None, scale: float | None = None) -> pd.DataFrame:
    """``eps_elec_mean`` (geometric mean of the members' ε, the model's own prediction), ``eps_elec_std``
    (scale × members' sample std), ``eps_elec_n`` and ``eps_elec_error`` (None or why it failed) per structure."""
    from core.scoring.dielectric import load_dielectric_model

    model = load_dielectric_model() if model is None else model
    if scale is None:   # a model that carries its own calibration (the shipped one since issue #20) uses it
        scale = getattr(model, "spread_scale", None) or SPREAD_SCALE["eps_elec"]
    rows = []
    for value in dielectric_members(structures, model):
        if isinstance(value, BaseException):
            rows.append({"eps_elec_mean": math.nan, "eps_elec_std": math.nan, "eps_elec_n": 0,
                         "eps_elec_error": str(value) or type(value).__name__})
            continue
        _, std, count = member_spread(value, scale)
        rows.append({"eps_elec_mean": float(np.exp(np.mean(np.log(value)))), "eps_elec_std": std,
                     "eps_elec_n": count, "eps_elec_error": None})
    return pd.DataFrame(rows, columns=["eps_elec_mean", "eps_elec_std", "eps_elec_n", "eps_elec_error"])


# ------------------------------------------------------------------------------------------ FoM
def fom_uncertainty(eps: Any, eps_std: Any, gap_ev: Any, gap_std_ev: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """FoM = ε × E_g (eV) and its first-order σ for independent errors: √((E_g σ_ε)² + (ε σ_Eg)²).

    Array-like inputs broadcast; NaN in gives NaN out.
    """
    eps, eps_std, gap, gap_std = (np.asarray(v, dtype=float) for v in (eps, eps_std, gap_ev, gap_std_ev))
    return eps * gap, np.hypot(gap * eps_std, eps * gap_std)


def confidence_bound(mean: Any, std: Any, k: float = DEFAULT_LCB_K, lower: bool = True) -> np.ndarray:
    """mean − k σ (lower) or mean + k σ (upper); a missing σ counts as 0."""
    std = np.nan_to_num(np.asarray(std, dtype=float), nan=0.0)
    return np.asarray(mean, dtype=float) + (-k if lower else k) * std


def with_fom_uncertainty(frame: pd.DataFrame, gap_std_ev: float | None = None, k: float = DEFAULT_LCB_K) -> pd.DataFrame:
    """A copy of a scored table with ``fom_ev_mean``, ``fom_ev_std``, ``fom_ev_lcb`` (eV) added.

    Uses ``eps_elec_mean`` (else ``eps_elec``), ``eps_elec_std`` (else 0), ``band_gap_ev`` and
    ``band_gap_ev_std`` (else ``gap_std_ev``, else 0).
    """
    out = frame.copy()

    def col(name: str, fallback: str | float | None) -> pd.Series:
        if name in out:
            return pd.to_numeric(out[name], errors="coerce")
        if isinstance(fallback, str) and fallback in out:
            return pd.to_numeric(out[fallback], errors="coerce")
        return pd.Series(float(fallback or 0.0), index=out.index)

    eps = col("eps_elec_mean", "eps_elec")
    gap = col("band_gap_ev", math.nan)
    if "band_gap_ev_std" not in out:
        out["band_gap_ev_std"] = float(gap_std_ev or 0.0)
    fom, fom_std = fom_uncertainty(eps, col("eps_elec_std", 0.0), gap, col("band_gap_ev_std", 0.0))
    out["fom_ev_mean"] = fom
    out["fom_ev_std"] = fom_std
    out["fom_ev_lcb"] = confidence_bound(fom, fom_std, k)
    return out


def rank(frame: pd.DataFrame, by: Literal["mean", "lcb"] = "mean", k: float = DEFAULT_LCB_K) -> pd.DataFrame:
    """The table sorted best first by FoM (``by="mean"``) or by its lower confidence bound FoM − k σ
    (``by="lcb"``), with a 1-based ``rank`` column; rows without a FoM go last."""
    if by not in ("mean", "lcb"):
        raise InvalidInputError(f"rank by 'mean' or 'lcb', not {by!r}")
    table = frame if {"fom_ev_mean", "fom_ev_std"} <= set(frame.columns) else with_fom_uncertainty(frame, k=k)
    table = table.copy()
    table["fom_ev_lcb"] = confidence_bound(table["fom_ev_mean"], table["fom_ev_std"], k)
    key = "fom_ev_mean" if by == "mean" else "fom_ev_lcb"
    table = table.sort_values(key, ascending=False, na_position="last", kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def add_uncertainty(frame: pd.DataFrame, structures: Sequence[Structure], *, committee: Sequence[str | MLIP] | None = COMMITTEE,
                    hull: str | HullReference | Callable[[MLIP], HullReference] = "bundled", dielectric: Any = None,
                    gap_std_ev: float = 0.0, k: float = DEFAULT_LCB_K, device: str | None = None,
                    on_member: Callable[[str, str | None], None] | None = None) -> pd.DataFrame:
    """A scored table (``core.scoring.pipeline.score``) with every ± column of ``UNCERTAIN_COLUMNS`` added.

    ``structures`` are the ones the table describes, in its row order (the relaxed ones when the
    table was relaxed). ``committee=None`` skips the E_hull committee; ``dielectric=False`` skips ε.
    """
    structures = list(structures)
    if len(structures) != len(frame):
        raise InvalidInputError(f"{len(structures)} structures for a table of {len(frame)} rows")
    out = frame.copy()
    alive = [i for i, s in enumerate(structures) if isinstance(s, Structure)]   # failed rows stay empty
    good = [structures[i] for i in alive]

    def put(part: pd.DataFrame, columns: Sequence[str]) -> None:
        for column in columns:
            values = np.full(len(out), np.nan)
            values[alive] = pd.to_numeric(part[column], errors="coerce").to_numpy(dtype=float)
            out[column] = values

    if committee and good:
        hull_frame = committee_e_above_hull(good, committee, hull=hull, device=device, on_member=on_member)
        put(hull_frame, list(hull_frame.columns))
    if dielectric is not False and good:
        put(dielectric_ensemble(good, dielectric), ("eps_elec_mean", "eps_elec_std", "eps_elec_n"))
    return with_fom_uncertainty(out, gap_std_ev, k)


def std_columns(frame: pd.DataFrame | Mapping[str, Any]) -> dict[str, str]:
    """value column -> its ``_std`` column, for every pair present (e.g. ``eps_elec`` -> ``eps_elec_std``)."""
    keys = list(frame.columns if isinstance(frame, pd.DataFrame) else frame.keys())
    pairs = {}
    for key in keys:
        if key.endswith(STD_SUFFIX):
            base = key[: -len(STD_SUFFIX)]
            for candidate in (base, f"{base}_mean"):
                if candidate in keys:
                    pairs.setdefault(base, key)
    return pairs
