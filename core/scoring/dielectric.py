"""Electronic dielectric constant ε_elec = n² (dimensionless), n the refractive index.

Together with the band gap it gives the CrystalFormer-RL figure of merit FoM = ε_elec × E_g (eV).

The shipped model (``checkpoints/dielectric/``) is trained on matbench_dielectric (4,764 Materials
Project structures with n from DFPT). It is a gradient-boosted tree ensemble (LightGBM, L1 loss on
ln n, the mean of a few seeds) on physical descriptors of one structure, computed here in a few ms:

* composition: Magpie element properties (via smact's table) plus the first ionisation energy and
  electron affinity (pymatgen), each as the fraction-weighted mean, mean absolute deviation, min, max,
  range and the value of the most abundant element; stoichiometry norms, valence-orbital fractions,
  ionic character;
* Lorentz–Lorenz (Clausius–Mossotti) estimate: x = (4π/3) Σ α_i / V with per-element electronic
  polarisabilities α (Å³) fitted to the training set, n_LL = √((1 + 2x)/(1 − x));
* structure: volume per atom (Å³), density (g/cm³), packing fraction of covalent spheres, nearest
  neighbour distances (Å), coordination numbers, bond length / (r_cov,i + r_cov,j), electronegativity
  difference across bonds, fraction of like-atom bonds, space group number. All are intensive: a
  supercell gets the same numbers as its primitive cell.

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
FEATURE_VERSION = 1
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
FEATURE_NAMES: tuple[str, ...] = (
    *(f"{stat}_{prop}" for stat in COMPOSITION_STATS for prop in ELEMENT_PROPERTIES),
    "n_elements", *(f"stoich_norm_{p}" for p in (2, 3, 5, 7, 10)),
    *(f"valence_frac_{o}" for o in ORBITALS), "ionic_char_max", "ionic_char_mean",
    *STRUCTURE_FEATURES, *LORENTZ_LORENZ_FEATURES,
)


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


def structure_features(structure: Structure, polarizability: Mapping[str, float]) -> np.ndarray:
    """Feature vector of one ordered structure, in the order of ``FEATURE_NAMES`` (NaN = unknown)."""
    composition = structure.composition
    return np.concatenate([descriptors(structure, composition), lorentz_lorenz(structure, polarizability, composition)])


def descriptors(structure: Structure, composition: Composition | None = None) -> np.ndarray:
    """Label-free descriptors of one ordered structure: ``FEATURE_NAMES`` less the Lorentz–Lorenz pair
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
        boosters: LightGBM boosters, each predicting ln n; their mean is used.
        meta: the folder's ``dielectric.json`` (label, elements seen in training, feature names,
            ``polarizability_A3``: the fitted α per element, Å³).
    """

    def __init__(self, boosters: Sequence[Any], meta: dict[str, Any]) -> None:
        self.boosters = list(boosters)
        self.meta = meta
        self.label = str(meta.get("label", "dielectric descriptor model"))
        self.elements = frozenset(meta["elements"])
        self.polarizability: dict[str, float] = dict(meta["polarizability_A3"])
        self.device = "cpu"  # trees run on the CPU; featurisation dominates anyway

    def features(self, structures: Sequence[Structure]) -> list[np.ndarray | Exception]:
        """Descriptor vector per structure, or the ScoringError saying why it cannot be described."""
        out: list[np.ndarray | Exception] = []
        for structure in structures:
            try:
                _screen(structure, self.label, self.elements)
                out.append(structure_features(structure, self.polarizability))
            except ScoringError as exc:
                out.append(exc)
            except Exception as exc:  # noqa: BLE001 - a bad structure must not kill the batch
                out.append(ScoringError(f"invalid structure: {type(exc).__name__}: {exc}"))
        return out

    def predict_log_n(self, features: np.ndarray) -> np.ndarray:
        """ln n for a (rows, len(FEATURE_NAMES)) feature matrix (ensemble mean)."""
        return np.mean([booster.predict(features) for booster in self.boosters], axis=0)

    def predict(self, structures: Sequence[Structure]) -> list[float | Exception]:
        """ε_elec = n² per structure (n clipped to ≥ 1), or that structure's exception."""
        results: list[float | Exception] = list(self.features(structures))
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


def _load_descriptor_model(folder: Path, meta: dict[str, Any]) -> DescriptorDielectricModel:
    import lightgbm

    if meta.get("feature_version") != FEATURE_VERSION or meta.get("feature_names") != list(FEATURE_NAMES):
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
    if not boosters or any(b.num_feature() != len(FEATURE_NAMES) for b in boosters):
        raise CheckpointError(f"{path}: models do not take the {len(FEATURE_NAMES)} descriptors; retrain: {RETRAIN}")
    return DescriptorDielectricModel(boosters, meta)


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
                _CACHE[key] = _load_descriptor_model(folder, meta)
        return _CACHE[key]
