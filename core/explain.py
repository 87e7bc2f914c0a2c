"""Teaching helpers: a crystal's token sequence with the model's probability of each token.

CrystalFormer writes a crystal as: space group G, then for each symmetry-inequivalent site its
Wyckoff letter W, element A and fractional coordinates x, y, z, then a stop letter, then the lattice
(a, b, c, α, β, γ). One forward pass of the transformer over the whole sequence gives, at each
position, the distribution of the next token (``core.logp.forward``): categorical for W and A,
a von Mises mixture for coordinates, a Gaussian mixture for the lattice. ``token_steps`` reads the
probability the model gave each token of a crystal, and the top alternatives at discrete steps; the
sum of the per-token log-probabilities is the crystal's log-likelihood (``core.logp``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import wyckoff
from core.tokens import CrystalTokens, element_symbol

COORD_NAMES = ("x", "y", "z")


@dataclass
class TokenStep:
    """One token of a crystal and what the model thought of it."""

    kind: str                   # "Wyckoff", "element", "x", "y", "z", "end", "lattice"
    site: int | None            # 0-based site index (None for end and lattice)
    token: str                  # what was written, e.g. "c", "Cs", "0.2500"
    logp: float | None          # log-probability (discrete) or log-density (continuous), nats; None when fixed
    discrete: bool = True
    note: str = ""
    options: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["token", "probability"]))

    @property
    def probability(self) -> float | None:
        return float(np.exp(self.logp)) if (self.discrete and self.logp is not None) else None


@functools.lru_cache(maxsize=8)
def _forward(config):
    import jax

    from core.logp import forward

    return jax.jit(lambda params, G, XYZ, A, W: forward(config, params, G, XYZ, A, W))


def _top(logps: np.ndarray, labels, k: int) -> pd.DataFrame:
    order = np.argsort(-logps)[:k]
    return pd.DataFrame({"token": [labels(int(i)) for i in order], "probability": np.exp(logps[order])})


def token_steps(checkpoint, tokens: CrystalTokens, top_k: int = 8) -> list[TokenStep]:
    """Per-token log-probabilities of ``tokens`` under ``checkpoint`` (see module docstring)."""
    import jax.numpy as jnp

    from core.logp import coord_logpdf, lattice_logpdf

    config = checkpoint.config
    arrays = tokens.to_arrays(config.n_max)
    G = jnp.asarray([arrays["G"]])
    h = np.asarray(_forward(config)(checkpoint.params, G, jnp.asarray(arrays["XYZ"][None]),
                                    jnp.asarray(arrays["A"][None]), jnp.asarray(arrays["W"][None])))[0]
    g = int(arrays["G"])
    free = wyckoff.tables().fc_mask[g - 1]
    letter = lambda w: "end" if w == 0 else wyckoff.index_to_letter(w)
    element = lambda z: "end" if z == 0 else element_symbol(z)
    steps: list[TokenStep] = []
    n = tokens.num_sites
    for i in range(n):
        w, a = int(arrays["W"][i]), int(arrays["A"][i])
        w_row = h[5 * i, :config.wyck_types]
        mult = int(wyckoff.tables().mult[g - 1, w])
        steps.append(TokenStep("Wyckoff", i, letter(w), float(w_row[w]), note=f"multiplicity {mult}",
                               options=_top(w_row, letter, top_k)))
        a_row = h[5 * i + 1, :config.atom_types]
        steps.append(TokenStep("element", i, element(a), float(a_row[a]), options=_top(a_row, element, top_k)))
        for d in range(3):
            x = float(arrays["XYZ"][i, d])
            if free[w, d]:
                lp = float(coord_logpdf(jnp.asarray(h[5 * i + 2 + d][None]), jnp.asarray([x]), config.Kx)[0])
                steps.append(TokenStep(COORD_NAMES[d], i, f"{x:.4f}", lp, discrete=False, note="density on [0, 1)"))
            else:
                steps.append(TokenStep(COORD_NAMES[d], i, f"{x:.4f}", None, discrete=False,
                                       note=f"fixed by Wyckoff position {letter(w)}"))
    if n < config.n_max:
        end_row = h[5 * n, :config.wyck_types]
        steps.append(TokenStep("end", None, "end", float(end_row[0]), note="stop: no more sites",
                               options=_top(end_row, letter, top_k)))
    lat_row = h[5 * n + 1]
    lp_l = float(lattice_logpdf(jnp.asarray(lat_row[None]), jnp.asarray(arrays["L"][None]), G, config)[0])
    a, b, c, al, be, ga = tokens.lattice
    steps.append(TokenStep("lattice", None, f"{a:.2f}, {b:.2f}, {c:.2f} Å; {al:.1f}°, {be:.1f}°, {ga:.1f}°", lp_l,
                           discrete=False, note="joint density of the free lattice parameters (normalised units)"))
    return steps


def steps_frame(steps: list[TokenStep]) -> pd.DataFrame:
    """Table of a crystal's tokens: step, site, kind, token, probability (discrete), log p (nats), note."""
    return pd.DataFrame([{
        "step": k + 1, "site": (s.site + 1) if s.site is not None else None, "kind": s.kind, "token": s.token,
        "probability": s.probability, "logp": s.logp, "note": s.note} for k, s in enumerate(steps)])


def total_logp(steps: list[TokenStep]) -> float:
    """Sum of the per-token log-probabilities and log-densities (nats) = the crystal's log-likelihood."""
    return float(sum(s.logp for s in steps if s.logp is not None))


def temperature_summary(samples_by_t: dict[float, list]) -> pd.DataFrame:
    """Per temperature: samples, buildable fraction, distinct formulas, mean atoms, mean log p (nats)."""
    rows = []
    for t, samples in sorted(samples_by_t.items()):
        built = [s for s in samples if s.structure is not None]
        rows.append({
            "temperature": t,
            "samples": len(samples),
            "buildable": len(built) / len(samples) if samples else np.nan,
            "distinct formulas": len({s.formula for s in built}),
            "mean atoms": float(np.mean([len(s.structure) for s in built])) if built else np.nan,
            "mean log p (nats)": float(np.mean([s.logp for s in samples])) if samples else np.nan,
        })
    return pd.DataFrame(rows)


def free_parameters(first_member: str) -> str:
    """The free coordinates of a Wyckoff position from its first orbit member: '(x, x, x)' -> 'x', '0,1/2,z' -> 'z'."""
    return "".join(n for n in COORD_NAMES if n in first_member.lower()) or "none"


def wyckoff_frame(g: int) -> pd.DataFrame:
    """A space group's Wyckoff positions as a table (letter, multiplicity, site symmetry, coordinates, free)."""
    rows = []
    for wp in wyckoff.wyckoff_table(g):
        coords = ", ".join(f"({c})" for c in wp.coordinates[:3]) + (" …" if len(wp.coordinates) > 3 else "")
        rows.append({"Wyckoff": f"{wp.multiplicity}{wp.letter}", "Multiplicity": wp.multiplicity,
                     "Site symmetry": wp.site_symmetry, "Coordinates (first orbit members)": coords,
                     "Free parameters": free_parameters(wp.coordinates[0])})
    return pd.DataFrame(rows)
