"""Electronic dielectric constant ε_elec = n² (dimensionless), n the refractive index.

Together with the band gap it gives the CrystalFormer-RL figure of merit FoM = ε_elec × E_g (eV).

The shipped model (``checkpoints/dielectric/``) is trained on matbench_dielectric (4,764 Materials
Project structures with n from DFPT). It is a gradient-boosted tree ensemble (LightGBM, L1 loss on
ln n, the mean of a few boosters) on physical descriptors of one structure (a few ms) and on learned
representations from two pretrained matgl networks (≈ 15 ms a structure on a CPU):

* composition: Magpie element properties (via smact's table) plus the first ionisation energy and
  electron affinity (pymatgen), each as the fraction-weighted mean, mean absolute deviation, min, max,
  range and the value of the most abundant element; stoichiometry norms, valence-orbital fractions,
  ionic character;
* Lorentz–Lorenz (Clausius–Mossotti) estimate: x = (4π/3) Σ α_i / V with per-element electronic
  polarisabilities α (Å³) fitted to the training set, n_LL = √((1 + 2x)/(1 − x));
* structure: volume per atom (Å³), density (g/cm³), packing fraction of covalent spheres, nearest
  neighbour distances (Å), coordination numbers, bond length / (r_cov,i + r_cov,j), electronegativity
  difference across bonds, fraction of like-atom bonds, space group number. All are intensive: a
  supercell gets the same numbers as its primitive cell;
* Penn model: the PBE band gap E_g of MEGNet-MP-2019.4.1-BandGap-mfi (the app's gap model), the
  valence-electron density n_e (e/Å³, Magpie valence counts), the plasma energy
  ħω_p = √(n_e e² ħ² / (ε₀ mₑ)) = 37.13 eV · √(n_e / Å⁻³) and ε_Penn = 1 + s · (ħω_p / (E_g + δ))²,
  with δ (eV) and s fitted to the training set (Penn's average gap is larger than the band gap);
* learned representations: the readout vectors (set2set pooled atom and bond features + state, the
  input of the final MLP) of that band-gap MEGNet and of MEGNet-MP-2018.6.1-Eform, plus the latter's
  formation energy (eV/atom).

The benchmark (matbench 5-fold protocol), the data and how to retrain are in
``checkpoints/dielectric/MODEL_CARD.md``; ``bench/dielectric.py`` reproduces them.

Any matgl property model can replace it: ``load_dielectric_model(folder)`` with a matgl folder
(``model.json``/``model.pt``/``state.pt``) that predicts n or ε_elec. Which one it predicts is read
from ``dielectric.json`` beside it (``{"target": "n"}`` or ``{"target": "eps"}``) or given as
``target=``.
"""
from __future__ import annotations

import gzip
import json
import math
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pymatgen.core import Composition, Element, Structure
from pymatgen.core.units import amu_to_kg  # density in g/cm³ exactly as Structure.density, without its unit objects

from core.errors import CheckpointError, InvalidInputError, ScoringError
from core.neighbors import neighbor_list
from core.settings import checkpoints_dir, require
from core.symmetry import space_group_number

Target = Literal["n", "eps"]

META_FILE = "dielectric.json"          # what the folder holds and predicts
BOOSTER_FILE = "boosters.txt.gz"        # LightGBM text models of the shipped ensemble, gzip
RETRAIN = ".venv/bin/python -m core.scoring.dielectric_train --out checkpoints/dielectric"
FEATURE_VERSION = 2
PLASMA_EV_PER_SQRT_DENSITY = 37.13      # ħω_p (eV) = 37.13 · √(n_e in electrons/Å³): √(e²ħ²/(ε₀ mₑ)) at 1 Å⁻³
DEFAULT_PENN = {"delta_ev": 2.0, "scale": 1.0}   # used until a training set fits them
LEARNED_DECIMALS = 5                    # learned features: batching moves them by ~1e-7; rounded away
GAP_MODEL = "MEGNet-MP-2019.4.1-BandGap-mfi"
EFORM_MODEL = "MEGNet-MP-2018.6.1-Eform"
READOUT_SIZE = 160                      # MEGNet readout: node set2set 64 + bond set2set 64 + state 32
NEIGHBOUR_CUTOFF_A = 6.0                # Å; every atom needs a neighbour within it
DECIMALS = 9                            # features are rounded to this many decimals
BOND_TOLERANCE = 1.2                    # a bond: distance < 1.2 × that atom's nearest-neighbour distance

MAGPIE_PROPERTIES = (
    "Number", "MendeleevNumber", "AtomicWeight", "MeltingT", "Column", "Row", "CovalentRadius",
    "Electronegativity", "NsValence", "NpValence", "NdValence", "NfValence", "NValence", "NsUnfilled",
    "NpUnfilled", "NdUnfilled", "NfUnfilled", "NUnfilled", "GSvolume_pa", "GSbandgap", "GSmagmom",
    "SpaceGroupNumber",
)
ELEMENT_PROPERTIES = (*MAGPIE_PROPERTIES, "IonizationEnergy1", "ElectronAffinity")
COMPOSITION_STATS = ("mean", "avg_dev", "min", "max", "range", "mode")
ORBITALS = ("s", "p", "d", "f")
STRUCTURE_FEATURES = (
    "volume_per_atom", "density", "packing_fraction", "sum_rcov3_per_volume",
    "nn_dist_mean", "nn_dist_min", "nn_dist_std", "cn_mean", "cn_std", "cn_min", "cn_max",
    "bond_ratio_mean", "bond_ratio_min", "bond_ratio_max", "bond_dX_mean", "bond_dX_max", "like_bond_fraction",
    "spacegroup",
)
LORENTZ_LORENZ_FEATURES = ("lorentz_lorenz_x", "lorentz_lorenz_n")
PENN_FEATURES = ("megnet_gap_ev", "valence_electron_density", "plasma_energy_ev", "penn_eps")
LEARNED_FEATURES = (
    "megnet_gap_pbe_ev", *(f"megnet_gap_readout_{i}" for i in range(READOUT_SIZE)),
    "megnet_eform_ev_per_atom", *(f"megnet_eform_readout_{i}" for i in range(READOUT_SIZE)),
)
BASE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"{stat}_{prop}" for stat in COMPOSITION_STATS for prop in ELEMENT_PROPERTIES),
    "n_elements", *(f"stoich_norm_{p}" for p in (2, 3, 5, 7, 10)),
    *(f"valence_frac_{o}" for o in ORBITALS), "ionic_char_max", "ionic_char_mean",
    *STRUCTURE_FEATURES, *LORENTZ_LORENZ_FEATURES,
)
FEATURE_NAMES: tuple[str, ...] = (*BASE_FEATURE_NAMES, *PENN_FEATURES, *LEARNED_FEATURES)
# feature_version -> the features its boosters take. Version 1 (descriptors + Lorentz–Lorenz only, the model
# shipped before issue #20) still loads and predicts; it needs no matgl network.
FEATURES_OF_VERSION: dict[int, tuple[str, ...]] = {1: BASE_FEATURE_NAMES, 2: FEATURE_NAMES}


class DielectricModel(Protocol):
    """Predicts ε_elec (dimensionless, ≥ 1) for each structure, or the exception of that structure."""

    label: str

    def predict(self, structures: Sequence[Structure]) -> list[float | Exception]: ...


# ---------------------------------------------------------------------------------------------- features
@cache
def element_table() -> np.ndarray:
    """Element properties, shape (119, len(ELEMENT_PROPERTIES)), row = atomic number; NaN where unknown.

    Units: CovalentRadius pm, MeltingT K, GSvolume_pa Å³/atom, GSbandgap eV, IonizationEnergy1 eV,
    ElectronAffinity eV, Electronegativity Pauling.
    """
    from smact.data_loader import lookup_element_magpie_data

    table = np.full((119, len(ELEMENT_PROPERTIES)), np.nan)
    for z in range(1, 119):
        element = Element.from_Z(z)
        magpie = lookup_element_magpie_data(element.symbol, copy=False) if z <= 97 else None  # smact's table ends at Bk
        if magpie:
            table[z, :len(MAGPIE_PROPERTIES)] = [magpie[p] for p in MAGPIE_PROPERTIES]
        ionization = element.data.get("Ionization energies") or []
        if ionization and ionization[0] is not None:
            table[z, -2] = ionization[0]
        affinity = element.data.get("Electron affinity")
        if isinstance(affinity, (int, float)):
            table[z, -1] = affinity
    return table


def _column(name: str) -> int:
    return ELEMENT_PROPERTIES.index(name)


@cache
def _atomic_masses() -> tuple[float, ...]:
    """pymatgen's atomic mass (amu) by atomic number, as plain floats."""
    return (math.nan, *(float(Element.from_Z(z).atomic_mass) for z in range(1, 119)))


def _weight_amu(composition: Composition) -> float:
    """``float(composition.weight)`` (amu), the same sum without pymatgen's unit objects (4x faster)."""
    masses = _atomic_masses()
    return float(sum(amount * masses[el.Z] for el, amount in composition.items()))


def lorentz_lorenz(structure: Structure, polarizability: Mapping[str, float],
                   composition: Composition | None = None) -> np.ndarray:
    """[x, n_LL]: Clausius–Mossotti x = (4π/3) Σ α_i / V and n_LL = √((1 + 2x)/(1 − x)) (capped at 100).

    Args:
        structure: the crystal (V in Å³).
        polarizability: electronic polarisability volume α per element symbol, Å³ (missing: 0).
        composition: ``structure.composition``, when the caller has it already.
    """
    composition = composition if composition is not None else structure.composition
    total = sum(polarizability.get(el.symbol, 0.0) * amount for el, amount in composition.items())
    x = 4 * math.pi / 3 * total / structure.volume
    eps = (1 + 2 * x) / (1 - x) if x < 1 - 1e-4 else 1e4
    return np.round([x, math.sqrt(min(max(eps, 1.0), 1e4))], DECIMALS)


def valence_electron_density(structure: Structure, composition: Composition | None = None) -> float:
    """Valence electrons per Å³ (Magpie ``NValence``: s + p + d + f outside the noble-gas core)."""
    composition = composition if composition is not None else structure.composition
    column = element_table()[:, _column("NValence")]
    return float(sum(amount * column[el.Z] for el, amount in composition.items()) / structure.volume)


def penn_features(structure: Structure, gap_ev: float, penn: Mapping[str, float] = DEFAULT_PENN,
                  composition: Composition | None = None) -> np.ndarray:
    """[E_g (eV), n_e (e/Å³), ħω_p (eV), ε_Penn]: the Penn-model estimate ε ≈ 1 + s (ħω_p / (E_g + δ))².

    Args:
        structure: the crystal.
        gap_ev: its band gap, eV (negative values, as MEGNet gives for metals, count as 0).
        penn: ``delta_ev`` (δ, eV) and ``scale`` (s), fitted by ``fit_penn``.
        composition: ``structure.composition``, when the caller has it already.
    """
    density = valence_electron_density(structure, composition)
    plasma = PLASMA_EV_PER_SQRT_DENSITY * math.sqrt(max(density, 0.0))
    eps = 1.0 + penn["scale"] * (plasma / (max(gap_ev, 0.0) + penn["delta_ev"])) ** 2
    return np.round([gap_ev, density, plasma, eps], DECIMALS)


def fit_penn(density: np.ndarray, gap_ev: np.ndarray, eps: np.ndarray) -> dict[str, float]:
    """δ (eV) and s of ε_Penn that fit ln(ε − 1) best (median absolute deviation) on these rows.

    Args:
        density: valence-electron densities, e/Å³.
        gap_ev: band gaps, eV.
        eps: DFPT ε (rows with ε ≤ 1.01 are ignored, ln(ε − 1) is ill-defined there).
    """
    keep = eps > 1.01
    plasma = PLASMA_EV_PER_SQRT_DENSITY * np.sqrt(np.maximum(density[keep], 0.0))
    best = (math.inf, DEFAULT_PENN["delta_ev"], 0.0)
    for delta in np.arange(0.25, 8.01, 0.25):
        residual = np.log(eps[keep] - 1) - 2 * np.log(plasma / (np.maximum(gap_ev[keep], 0) + delta))
        centre = float(np.median(residual))
        spread = float(np.median(np.abs(residual - centre)))
        if spread < best[0]:
            best = (spread, float(delta), centre)
    return {"delta_ev": best[1], "scale": round(math.exp(best[2]), 6)}


class LearnedFeatures:
    """Readout vectors of the pretrained MEGNet band-gap (PBE fidelity) and formation-energy networks.

    ``features(structures)`` gives, per structure, ``LEARNED_FEATURES`` (the PBE gap in eV, its
    160-number readout, E_form in eV/atom, its readout), rounded to ``LEARNED_DECIMALS``, or the
    ScoringError of that structure. Batched; the networks run on ``device`` (default: CPU).
    """

    def __init__(self, device: str | None = "cpu", batch_size: int = 64) -> None:
        from core.scoring.backends.matgl_property import MatglPropertyModel

        self.gap = MatglPropertyModel(GAP_MODEL, device=device, state=0, label=f"{GAP_MODEL} (PBE)",
                                      batch_size=batch_size)
        self.eform = MatglPropertyModel(EFORM_MODEL, device=device, batch_size=batch_size)
        self.elements = self.gap.elements & self.eform.elements
        self.cutoff_a = max(self.gap.cutoff_a, self.eform.cutoff_a)
        self.batch_size = batch_size

    @staticmethod
    def _readout(model: Any, structures: list[Structure]) -> np.ndarray:
        values = model._predict_batch(structures)
        inner = getattr(model.model, "model", model.model)
        readout = inner.feature_dict["readout"].detach().cpu().double().numpy().reshape(len(structures), -1)
        if readout.shape[1] != READOUT_SIZE:
            raise CheckpointError(f"{model.label}: readout has {readout.shape[1]} numbers, expected {READOUT_SIZE}")
        return np.hstack([np.asarray(values, dtype=float).reshape(-1, 1), readout])

    def check(self, structure: Structure) -> None:
        """Raise ScoringError for an element either network lacks. (An atom without a neighbour within
        MEGNet's 4-5 Å graph cutoff is allowed: its readout then comes from its own embedding, as
        matgl computes it; the descriptors already refuse atoms without a neighbour within 6 Å.)"""
        missing = sorted({el.symbol for el in structure.composition.elements} - self.elements)
        if missing:
            raise ScoringError(f"MEGNet readout: element {', '.join(missing)} not covered")

    def features(self, structures: Sequence[Structure]) -> list[np.ndarray | Exception]:
        """``LEARNED_FEATURES`` per structure, or that structure's exception."""
        from core.scoring.mlip import predict_in_batches

        def run(batch: list[Structure]) -> list[np.ndarray]:
            rows = np.round(np.hstack([self._readout(self.gap, batch), self._readout(self.eform, batch)]),
                            LEARNED_DECIMALS)
            if not np.isfinite(rows).all():
                raise ScoringError("a matgl network returned a non-finite readout")
            return list(rows)

        return predict_in_batches(structures, self.check, run, "MEGNet readout", self.batch_size)


_LEARNED: dict[str, LearnedFeatures] = {}
_LEARNED_LOCK = threading.Lock()


def learned_features_model(device: str | None = "cpu") -> LearnedFeatures:
    """``LearnedFeatures`` loaded once per device."""
    key = str(device)
    with _LEARNED_LOCK:
        if key not in _LEARNED:
            _LEARNED[key] = LearnedFeatures(device=device)
        return _LEARNED[key]


def structure_features(structure: Structure, polarizability: Mapping[str, float], learned: np.ndarray | None = None,
                       penn: Mapping[str, float] = DEFAULT_PENN) -> np.ndarray:
    """Feature vector of one ordered structure, in the order of ``FEATURE_NAMES`` (NaN = unknown).

    Args:
        structure: the crystal.
        polarizability: α per element, Å³ (Lorentz–Lorenz pair).
        learned: its ``LEARNED_FEATURES`` row when already computed (else computed here, CPU).
        penn: the fitted Penn parameters (``fit_penn``).

    Raises:
        ScoringError: the structure cannot be described (see ``descriptors`` and the matgl screens).
    """
    composition = structure.composition
    if learned is None:
        learned = learned_features_model().features([structure])[0]
        if isinstance(learned, Exception):
            raise learned
    return np.concatenate([descriptors(structure, composition), lorentz_lorenz(structure, polarizability, composition),
                           penn_features(structure, float(learned[0]), penn, composition), learned])


def descriptors(structure: Structure, composition: Composition | None = None) -> np.ndarray:
    """Label-free descriptors of one ordered structure: ``BASE_FEATURE_NAMES`` less the Lorentz–Lorenz pair
    (``composition``: ``structure.composition``, when the caller has it already).

    Raises:
        ScoringError: an element without Magpie data, or an atom without a neighbour within
            ``NEIGHBOUR_CUTOFF_A``.
    """
    table = element_table()
    weight_amu = _weight_amu(composition if composition is not None else structure.composition)
    pairs = neighbor_list(structure, NEIGHBOUR_CUTOFF_A)
    numbers = pairs.cell.numbers
    elements, counts = np.unique(numbers, return_counts=True)
    if np.isnan(table[elements, 0]).any():
        missing = [Element.from_Z(int(z)).symbol for z in elements if np.isnan(table[z, 0])]
        raise ScoringError(f"no element data for {', '.join(missing)}")
    weights = counts / counts.sum()
    props = table[elements]
    mean = weights @ props
    low, high = props.min(0), props.max(0)
    composition = [mean, weights @ np.abs(props - mean), low, high, high - low, props[np.argmax(weights)]]

    stoichiometry = [len(elements), *(np.sum(weights ** p) ** (1 / p) for p in (2, 3, 5, 7, 10))]
    valence = weights @ props[:, _column("NValence")]
    orbitals = [weights @ props[:, _column(f"N{o}Valence")] / valence if valence else np.nan for o in ORBITALS]
    chi = props[:, _column("Electronegativity")]
    ionic = 1 - np.exp(-0.25 * (chi[:, None] - chi[None, :]) ** 2)  # Pauling's ionic character of a pair

    nsites, volume = len(structure), structure.volume
    radius = table[numbers, _column("CovalentRadius")] / 100.0  # Å
    centres, neighbours, distances, nearest = pairs.centres, pairs.neighbours, pairs.distances, pairs.nearest
    if not np.isfinite(nearest).all():
        site = int(np.flatnonzero(~np.isfinite(nearest))[0])
        raise ScoringError(f"isolated atom: site {site} has no neighbour within {NEIGHBOUR_CUTOFF_A} Å")
    bonded = distances < BOND_TOLERANCE * nearest[centres]
    ci, cj, cd = centres[bonded], neighbours[bonded], distances[bonded]
    coordination = np.bincount(ci, minlength=nsites)
    ratio = cd / (radius[ci] + radius[cj])
    chi_site = table[numbers, _column("Electronegativity")]
    dchi = np.abs(chi_site[ci] - chi_site[cj])
    number = space_group_number(structure, 0.1)
    spacegroup = float(number) if number is not None else np.nan
    geometry = [
        volume / nsites, weight_amu * amu_to_kg * 1e3 / (volume * 1e-24), 4 / 3 * np.pi * np.sum(radius ** 3) / volume, np.sum(radius ** 3) / volume,
        nearest.mean(), nearest.min(), nearest.std(), coordination.mean(), coordination.std(),
        coordination.min(), coordination.max(), ratio.mean(), ratio.min(), ratio.max(),
        np.nanmean(dchi), np.nanmax(dchi), np.mean(numbers[ci] == numbers[cj]), spacegroup,
    ]
    features = np.concatenate([*composition, stoichiometry, orbitals, [ionic.max(), weights @ ionic @ weights], geometry])
    return np.round(features, DECIMALS)  # round-off (e.g. a std of 1e-16 vs 8e-16) must not cross a tree split


# ------------------------------------------------------------------------------------------------ models
def _screen(structure: Structure, label: str, elements: frozenset[str] | None) -> None:
    from core.scoring.mlip import check_structure

    check_structure(structure, label=label, elements=elements, cutoff_a=NEIGHBOUR_CUTOFF_A)


class DescriptorDielectricModel:
    """The shipped model: descriptors -> LightGBM ensemble -> ln n -> ε_elec = n².

    Args:
        boosters: LightGBM boosters, each predicting ln n; their mean is used. Each was trained on a
            random part of the training chemistries, so their spread grows off the training data.
        meta: the folder's ``dielectric.json`` (label, elements seen in training, feature names,
            ``polarizability_A3``: the fitted α per element, Å³; ``penn``: δ and s of ε_Penn;
            ``spread_scale``: the factor that turns the boosters' ε spread into a calibrated 1σ).
        device: torch device of the matgl networks behind the learned features (default CPU).
    """

    def __init__(self, boosters: Sequence[Any], meta: dict[str, Any], device: str | None = "cpu") -> None:
        self.boosters = list(boosters)
        self.meta = meta
        self.label = str(meta.get("label", "dielectric descriptor model"))
        self.elements = frozenset(meta["elements"])
        self.polarizability: dict[str, float] = dict(meta["polarizability_A3"])
        self.penn: dict[str, float] = dict(meta.get("penn", DEFAULT_PENN))
        self.spread_scale: float | None = meta.get("spread_scale")
        self.device = device or "cpu"
        self._learned_device = device
        self.feature_version = int(meta.get("feature_version", FEATURE_VERSION))
        if self.feature_version not in FEATURES_OF_VERSION:
            raise CheckpointError(f"{self.label}: unknown feature_version {self.feature_version}; retrain: {RETRAIN}")
        self.feature_names = FEATURES_OF_VERSION[self.feature_version]

    def features(self, structures: Sequence[Structure],
                 learned: Sequence[np.ndarray | Exception] | None = None) -> list[np.ndarray | Exception]:
        """Feature vector per structure, or the ScoringError saying why it cannot be described.

        ``learned``: the structures' ``LEARNED_FEATURES`` rows when already computed (training).
        """
        out: list[np.ndarray | Exception] = []
        good: list[int] = []
        for i, structure in enumerate(structures):
            try:
                _screen(structure, self.label, self.elements)
                out.append(descriptors(structure))
                good.append(i)
            except ScoringError as exc:
                out.append(exc)
            except Exception as exc:  # noqa: BLE001 - a bad structure must not kill the batch
                out.append(ScoringError(f"invalid structure: {type(exc).__name__}: {exc}"))
        if self.feature_version == 1:   # descriptors + Lorentz–Lorenz only: no matgl network
            for i in good:
                out[i] = self.assemble([structures[i]], out[i][None], None)[0]
            return out
        if learned is None:
            rows = learned_features_model(self._learned_device).features([structures[i] for i in good])
        else:
            rows = [learned[i] for i in good]
        for i, row in zip(good, rows):
            out[i] = row if isinstance(row, Exception) else self.assemble([structures[i]], out[i][None], row[None])[0]
        return out

    def assemble(self, structures: Sequence[Structure], descriptor_rows: np.ndarray,
                 learned_rows: np.ndarray | None) -> np.ndarray:
        """The (rows, ``self.feature_names``) matrix from precomputed descriptors and learned features, adding
        this model's Lorentz–Lorenz and Penn terms; no screening (training and benchmarks). A feature_version 1
        model ignores ``learned_rows`` (may be None)."""
        if self.feature_version == 1:
            return np.hstack([descriptor_rows, np.vstack([lorentz_lorenz(s, self.polarizability) for s in structures])])
        physics = []
        for structure, learned in zip(structures, learned_rows):
            composition = structure.composition
            physics.append(np.concatenate([lorentz_lorenz(structure, self.polarizability, composition),
                                           penn_features(structure, float(learned[0]), self.penn, composition)]))
        return np.hstack([descriptor_rows, np.vstack(physics), learned_rows])

    def predict_log_n(self, features: np.ndarray) -> np.ndarray:
        """ln n for a (rows, len(FEATURE_NAMES)) feature matrix (ensemble mean)."""
        return np.mean([booster.predict(features) for booster in self.boosters], axis=0)

    def predict(self, structures: Sequence[Structure]) -> list[float | Exception]:
        """ε_elec = n² per structure (n clipped to ≥ 1), or that structure's exception."""
        results: list[float | Exception] = list(self.features(list(structures)))
        good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        if good:
            n = np.exp(self.predict_log_n(np.vstack([results[i] for i in good])))
            for i, value in zip(good, n):
                results[i] = float(max(value, 1.0) ** 2)
        return results


class MatglDielectricModel:
    """A matgl property model that predicts n or ε_elec, batched through ``MatglPropertyModel``."""

    def __init__(self, path: Path, target: Target, device: str | None = None) -> None:
        from core.scoring.backends.matgl_property import MatglPropertyModel

        self.target = target
        self.model = MatglPropertyModel(path, device=device, label=f"{path.name} ({target})")
        self.label = self.model.label
        self.device = self.model.device

    def predict(self, structures: Sequence[Structure]) -> list[float | Exception]:
        """ε_elec per structure (n² when the model predicts n), or that structure's exception."""
        out: list[float | Exception] = []
        for value in self.model.predict(structures):
            if isinstance(value, Exception):
                out.append(value)
            else:
                eps = value * value if self.target == "n" else value
                out.append(float(eps) if math.isfinite(eps) else ScoringError(f"{self.label}: non-finite ε"))
        return out


# ------------------------------------------------------------------------------------------------ loading
def default_model_dir() -> Path:
    """``$CFRL_CHECKPOINTS_DIR/dielectric`` (the shipped model)."""
    return checkpoints_dir() / "dielectric"


def save_descriptor_model(folder: str | Path, boosters: Sequence[Any], meta: dict[str, Any]) -> Path:
    """Write a descriptor model folder: ``dielectric.json`` + gzip LightGBM text models. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = [booster.model_to_string() for booster in boosters]
    with gzip.open(folder / BOOSTER_FILE, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(texts, fh)
    meta = {**meta, "kind": "descriptor-lightgbm", "target": "n", "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES), "n_boosters": len(texts)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _load_descriptor_model(folder: Path, meta: dict[str, Any], device: str | None = None) -> DescriptorDielectricModel:
    import lightgbm

    names = FEATURES_OF_VERSION.get(meta.get("feature_version"))  # type: ignore[arg-type]
    if names is None or meta.get("feature_names") != list(names):
        raise CheckpointError(f"{folder} was trained on other descriptors (feature_version "
                              f"{meta.get('feature_version')}, this code {FEATURE_VERSION}); retrain: {RETRAIN}")
    path = require(folder / BOOSTER_FILE, "dielectric model trees", f"Retrain with: {RETRAIN}")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            texts = json.load(fh)
        boosters = [lightgbm.Booster(model_str=text) for text in texts]
    except Exception as exc:  # noqa: BLE001 - corrupt file
        raise CheckpointError(f"{path} cannot be read as LightGBM models ({type(exc).__name__}: {exc}); "
                              f"retrain with: {RETRAIN}") from exc
    if not boosters or any(b.num_feature() != len(names) for b in boosters):
        raise CheckpointError(f"{path}: models do not take the {len(names)} descriptors; retrain: {RETRAIN}")
    return DescriptorDielectricModel(boosters, meta, device=device or "cpu")


_CACHE: dict[tuple[str, str | None, str | None], DielectricModel] = {}
_LOCK = threading.Lock()


def load_dielectric_model(path: str | Path | None = None, device: str | None = None,
                          target: Target | None = None) -> DielectricModel:
    """The ε_elec model in ``path`` (default: the shipped one), loaded once per (path, device, target).

    Args:
        path: a folder holding either our descriptor model (``dielectric.json`` + ``boosters.txt.gz``)
            or a matgl property model (``model.json``/``model.pt``/``state.pt``).
        device: torch device for matgl models (default ``pick_torch_device()``); trees run on the CPU.
        target: what a matgl model predicts, ``"n"`` or ``"eps"``; default: ``target`` in its
            ``dielectric.json``.

    Raises:
        MissingResourceError: the folder or its model files are absent (names them and how to retrain).
        InvalidInputError: a matgl model whose target is neither given nor stated in ``dielectric.json``.
        CheckpointError: the files exist but cannot be used.
    """
    folder = Path(path).expanduser() if path is not None else default_model_dir()
    how = (f"Retrain the shipped model with: {RETRAIN}" if path is None else
           "Give a folder with dielectric.json + boosters.txt.gz (our model) or a matgl model.json/model.pt/state.pt")
    require(folder, "dielectric model folder", how)
    key = (str(folder.resolve()), device, target)
    with _LOCK:
        if key not in _CACHE:
            meta = _read_meta(folder)
            if (folder / "model.json").exists():
                chosen = target or meta.get("target")
                if chosen not in ("n", "eps"):
                    raise InvalidInputError(f"{folder} is a matgl model: say whether it predicts the refractive "
                                            "index or ε_elec, with target='n'/'eps' or "
                                            f'{{"target": "n"}} in {folder / META_FILE}')
                from core.scoring.device import pick_torch_device

                _CACHE[key] = MatglDielectricModel(folder, chosen, device=pick_torch_device(device))
            else:
                require(folder / META_FILE, "dielectric model description", how)
                _CACHE[key] = _load_descriptor_model(folder, meta, device)
        return _CACHE[key]
