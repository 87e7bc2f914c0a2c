"""Log-likelihood of crystals under a CrystalFormer, total and by part (nats).

Inputs are token arrays (see ``core.tokens.CrystalTokens``): G (B,), L (B, 6) *normalised* lattice
(lengths / N^(1/3), angles in radians), XYZ (B, n_max, 3), A and W (B, n_max). The parts:

* ``w``   Wyckoff letters (including the stop letter after the last site)
* ``a``   elements
* ``xyz`` fractional coordinates that are free at each site's Wyckoff position (von Mises mixtures)
* ``l``   lattice parameters that are free in the crystal system (Gaussian mixture)

``total = w + a + xyz + l``. Everything is batched, and jitted once per config.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from core import wyckoff
from core.config import ModelConfig
from core.lattice import LATTICE_MASK
from core.model import CrystalFormer


class LogProb(NamedTuple):
    w: jax.Array
    a: jax.Array
    xyz: jax.Array
    l: jax.Array

    @property
    def total(self) -> jax.Array:
        return self.w + self.a + self.xyz + self.l


def von_mises_logpdf(theta, loc, kappa):
    """log density of a von Mises distribution on the circle (radians); κ = 0 is uniform."""
    return -(jnp.log(2 * jnp.pi) + jnp.log(jax.scipy.special.i0e(kappa))) + kappa * (jnp.cos((theta - loc) % (2 * jnp.pi)) - 1)


def coord_logpdf(head_row: jax.Array, x: jax.Array, Kx: int) -> jax.Array:
    """log p(x) of fractional coordinates x under von Mises mixture rows (…, ≥3Kx) on θ = 2π(x − ½)."""
    logit, loc, kappa = head_row[..., :Kx], head_row[..., Kx:2 * Kx], head_row[..., 2 * Kx:3 * Kx]
    theta = (x - 0.5) * 2 * jnp.pi
    return jax.scipy.special.logsumexp(logit + von_mises_logpdf(theta[..., None], loc, kappa), axis=-1)


def lattice_logpdf(head_row: jax.Array, L: jax.Array, G: jax.Array, config: ModelConfig) -> jax.Array:
    """log p(L) of normalised lattices (B, 6) under the Gaussian mixture rows (B, ≥ atom_types+13Kl)."""
    Kl, a0 = config.Kl, config.atom_types
    logit = head_row[:, a0:a0 + Kl]
    mu = head_row[:, a0 + Kl:a0 + 7 * Kl].reshape(-1, Kl, 6)
    sigma = head_row[:, a0 + 7 * Kl:a0 + 13 * Kl].reshape(-1, Kl, 6)
    per_dim = jax.scipy.special.logsumexp(logit[:, :, None] + jax.scipy.stats.norm.logpdf(L[:, None, :], mu, sigma), axis=1)
    free = jnp.asarray(LATTICE_MASK)[G - 1]
    return jnp.sum(jnp.where(free, per_dim, 0.0), axis=-1)


def multiplicities(G, W):
    """Multiplicity of each site's Wyckoff position, (B, n)."""
    return jnp.asarray(wyckoff.tables().mult)[G - 1][jnp.arange(W.shape[0])[:, None], W]


def logp_from_outputs(h: jax.Array, G, L, XYZ, A, W, config: ModelConfig) -> LogProb:
    """Split the model's full output (B, 5n+1, out) into the four log-likelihood parts."""
    B, n = W.shape
    rows = jnp.arange(B)[:, None]
    sites = jnp.arange(n)[None, :]
    w_rows = h[:, 0::5, :config.wyck_types][:, :n]           # W_0 from G; W_{i+1} from Z_i
    a_rows = h[:, 1::5]                                       # from W_i: atoms + lattice
    logp_w = jnp.sum(w_rows[rows, sites, W], axis=1)
    logp_a = jnp.sum(a_rows[rows, sites, A], axis=1)
    free = (W > 0)[..., None] & jnp.asarray(wyckoff.tables().fc_mask)[G[:, None] - 1, W]  # (B, n, 3)
    logp_xyz = 0.0
    for d in range(3):
        per_site = coord_logpdf(h[:, 2 + d::5][:, :n], XYZ[..., d], config.Kx)
        logp_xyz = logp_xyz + jnp.sum(jnp.where(free[..., d], per_site, 0.0), axis=1)
    num_sites = jnp.sum(A != 0, axis=1)
    logp_l = lattice_logpdf(a_rows[jnp.arange(B), num_sites], L, G, config)
    return LogProb(logp_w, logp_a, logp_xyz, logp_l)


def forward(config: ModelConfig, params, G, XYZ, A, W, *, rng=None):
    """Full model output (B, 5n+1, output_size); dropout on when ``rng`` is given."""
    model = CrystalFormer(config)
    M = multiplicities(G, W)
    if rng is None:
        return model.apply({"params": params}, G, XYZ, A, W, M, True)
    return model.apply({"params": params}, G, XYZ, A, W, M, False, rngs={"dropout": rng})


def log_prob(config: ModelConfig, params, G, L, XYZ, A, W, *, rng=None) -> LogProb:
    """Per-crystal log-likelihood parts (nats). Not jitted: call inside jit, or use ``logp_fn``."""
    h = forward(config, params, G, XYZ, A, W, rng=rng)
    return logp_from_outputs(h, G, L, XYZ, A, W, config)


@functools.lru_cache(maxsize=16)
def logp_fn(config: ModelConfig):
    """Jitted ``(params, G, L, XYZ, A, W) -> LogProb`` for one config (dropout off)."""
    return jax.jit(lambda params, G, L, XYZ, A, W: log_prob(config, params, G, L, XYZ, A, W))


def batched_logp(config: ModelConfig, params, G, L, XYZ, A, W, batch_size: int = 256) -> LogProb:
    """``logp_fn`` over any number of crystals in fixed-size chunks (one compilation), numpy out."""
    fn = logp_fn(config)
    n = len(G)
    parts = []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        chunk = [np.asarray(x[sl]) for x in (G, L, XYZ, A, W)]
        size = len(chunk[0])
        if size < batch_size and n > batch_size:  # pad the last chunk to keep one compiled shape
            chunk = [np.concatenate([c, np.repeat(c[:1], batch_size - size, axis=0)]) for c in chunk]
        out = fn(params, *[jnp.asarray(c) for c in chunk])
        parts.append([np.asarray(p)[:size] for p in out])
    return LogProb(*[np.concatenate([p[i] for p in parts]) for i in range(4)])


def loss_fn(config: ModelConfig, params, batch, rng=None) -> tuple[jax.Array, dict]:
    """Mean negative log-likelihood of a batch (G, L, XYZ, A, W) and its parts (the training loss)."""
    lp = log_prob(config, params, *batch, rng=rng)
    parts = {"w": -jnp.mean(lp.w), "a": -jnp.mean(lp.a), "xyz": -jnp.mean(lp.xyz), "l": -jnp.mean(lp.l)}
    return parts["w"] + parts["a"] + parts["xyz"] + parts["l"], parts
