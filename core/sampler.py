"""Sampling crystals from a CrystalFormer, one token at a time, with a key/value cache.

    samples = sample(checkpoint, spacegroup=225, num=100, temperature=1.0, elements=["Cs", "Li", "F"], seed=0)
    samples[0].structure, samples[0].string, samples[0].logp

Decoding follows the token order of ``core.model``: W_0 from G, then for each site the element, x, y, z
(each coordinate projected onto the sampled Wyckoff position right away, as the reference does), then
the next Wyckoff letter; the lattice is drawn at the end from the mixture read at the first padding
site. Each step's randomness comes from ``fold_in(key, step)``, so the cached path and the
full-recompute path (``use_cache=False``: the whole prefix goes through the transformer at every step,
as in the reference) draw the same crystals from the same key. Decoding stops as soon as every crystal
in the batch has ended. The last site is always padding, so every sample has a lattice row.

Temperature T scales the Wyckoff, element and mixture-component logits by 1/T, von Mises
concentrations by 1/T and lattice widths by √T. The returned ``logp`` is the crystal's log-likelihood
under the model itself (T = 1, no element mask), the same number ``core.logp`` computes.

Overlap-aware sampling (``reject_overlaps=True``; off by default, so RL and screens see the model's own
distribution): a finished crystal with two atoms closer than ``core.overlap``'s pair threshold is drawn
again, first only its lattice (the model's exact conditional p(L | sites), read from the row the
decoding already computed: no transformer call), then as a whole crystal of the same space group, in
batched rounds. The samples then follow the model restricted to non-overlapping crystals (see
``_reject_overlaps`` for the one approximation, the lattice retries), while ``logp`` stays the model's
own log-likelihood of each returned sequence. Redrawing a coordinate while decoding is not possible
here: distances need the lattice, which the model emits last. Crystals that never fit come back
flagged (``Sample.fits`` False), never dropped.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from core import lattice as lat
from core import overlap, wyckoff
from core.checkpoint import Checkpoint
from core.config import ModelConfig
from core.errors import InvalidInputError
from core.logp import coord_logpdf, lattice_logpdf, multiplicities
from core.model import CrystalFormer, grow_cache, init_cache
from core.overlap import OverlapRule
from core.tokens import CrystalTokens, atomic_number

DECODE_SPANS = (16, 40)           # cache lengths while t < span (then seq_len): most crystals stop early
CACHE_BUDGET_BYTES = 224 * 2**20  # full-length key/value cache per chunk; larger batches run in chunks. Decoding
                                  # is memory-bound: at the paper config 16-32 rows run as fast per crystal
                                  # as 128, with a fraction of the memory (bench/sampling.py)
# overlap-aware sampling (``sample(reject_overlaps=True)``; numbers measured in bench/overlap.md)
LATTICE_TRIES = 8     # lattices per drawn crystal (the first included); no transformer call, ~free
CRYSTAL_ROUNDS = 10   # rounds of whole-crystal redraws for what no lattice fits; each is one batched decode
ROUND_ROWS = 32       # rows per decode chunk of a redraw round, and per lattice-retry call: one compiled shape
                      # each whatever the number of rows still to redraw, so the app's warm-up compiles them all
                      # (a new shape costs seconds of compilation; 32 rows decode as fast per crystal as 128)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One generated crystal. ``structure`` is None (and ``error`` says why) when it cannot be built;
    ``fits`` False flags a crystal overlap-aware sampling could not make fit (its atoms overlap)."""

    tokens: CrystalTokens
    logp: float                      # log-likelihood under the model, nats
    logp_parts: dict = field(default_factory=dict)
    structure: object = None         # pymatgen Structure
    error: str | None = None
    # overlap-aware sampling only (None otherwise): see ``sample(reject_overlaps=...)``
    fits: bool | None = None         # no two atoms closer than the rule's threshold
    min_distance: float | None = None  # shortest interatomic distance, Å (inf: none within 3 Å)
    overlap: str | None = None       # which atoms clash, when it does not fit
    draws: int | None = None         # whole crystals drawn for this row (1: the first one was kept)
    lattice_draws: int | None = None  # lattices tried in all

    @property
    def spacegroup(self) -> int:
        return self.tokens.spacegroup

    @property
    def string(self) -> str:
        return self.tokens.to_string()

    @property
    def formula(self) -> str:
        return self.structure.composition.reduced_formula if self.structure is not None else self.tokens.formula


# ---------------------------------------------------------------------------------------------
# Random draws
# ---------------------------------------------------------------------------------------------
def sample_von_mises(key, kappa):
    """Centred von Mises draws on [-π, π) for concentrations ``kappa`` (any shape).

    Best & Fisher's (1979) rejection sampler with a wrapped-Cauchy envelope; a normal
    approximation (σ² = 1/κ) for very large κ where float32 rejection loses precision.
    """
    kappa = jnp.maximum(kappa, 1e-6)
    tau = 1.0 + jnp.sqrt(1.0 + 4.0 * kappa**2)
    rho = (tau - jnp.sqrt(2.0 * tau)) / (2.0 * kappa)
    r = jnp.where(kappa > 1e-2, (1.0 + rho**2) / (2.0 * rho), 1.0 / kappa)

    def cond(state):
        i, _, done, _ = state
        return (i < 100) & ~jnp.all(done)

    def body(state):
        i, k, done, theta = state
        k, k1, k2, k3 = jax.random.split(k, 4)
        u1, u2, u3 = (jax.random.uniform(kk, kappa.shape, kappa.dtype) for kk in (k1, k2, k3))
        z = jnp.cos(jnp.pi * u1)
        f = (1.0 + r * z) / (r + z)
        c = kappa * (r - f)
        accept = (c * (2.0 - c) - u2 > 0) | (jnp.log(c / u2) + 1.0 - c >= 0)
        new = jnp.sign(u3 - 0.5) * jnp.arccos(jnp.clip(f, -1.0, 1.0))
        theta = jnp.where(done, theta, new)
        return i + 1, k, done | accept, theta

    key, normal_key = jax.random.split(key)
    _, _, _, theta = jax.lax.while_loop(cond, body, (0, key, jnp.zeros(kappa.shape, bool), jnp.zeros_like(kappa)))
    normal = jax.random.normal(normal_key, kappa.shape, kappa.dtype) / jnp.sqrt(kappa)
    return jnp.where(kappa > 1e3, normal, theta)


def _categorical(key, logits, temperature, top_p):
    logits = logits / temperature
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        drop_sorted = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool), cum[..., :-1] > top_p], axis=-1)
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -1e10, logits)
    return jax.random.categorical(key, logits, axis=-1)


def _draw_coordinate(key, row, Kx, temperature, top_p):
    """x ∈ [0, 1) from a von Mises mixture row (B, ≥3Kx)."""
    k_comp, k_vm = jax.random.split(key)
    comp = _categorical(k_comp, row[:, :Kx], temperature, top_p)
    pick = lambda block: jnp.take_along_axis(row[:, block * Kx:(block + 1) * Kx], comp[:, None], axis=1)[:, 0]
    theta = pick(1) + sample_von_mises(k_vm, pick(2) / temperature)
    theta = (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi
    return (theta + jnp.pi) / (2 * jnp.pi)


# ---------------------------------------------------------------------------------------------
# The decoding loop
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Decoding:
    """What every decoding step of one batch reads: the model, the batch's space groups and the sampling
    settings (fixed for the whole batch; the per-step state travels separately as a dict)."""

    config: ModelConfig
    model: CrystalFormer
    variables: dict
    key: jax.Array
    G: jax.Array              # (B,) space groups
    temperature: jax.Array
    top_p: float
    atom_mask: jax.Array      # (atom_types,) allowed elements
    use_cache: bool
    first_op: jax.Array       # (230, wyck_types, 3, 4) first symmetry operation of each Wyckoff position
    fc_mask: jax.Array        # (230, wyck_types, 3) free coordinates of each Wyckoff position
    dtype: object

    @property
    def B(self) -> int:
        return self.G.shape[0]

    def head(self, method, *args):
        return self.model.apply(self.variables, *args, method=method)


def _output_row(ctx: _Decoding, s: dict):
    """Processed output row of token t (B, output_size), and the updated cache."""
    t = s["t"]
    i, kind = t // 5, t % 5
    W_i = s["W"][:, i]
    G = ctx.G
    if ctx.use_cache:
        site = lambda x: jax.lax.dynamic_slice_in_dim(x, i, 1, axis=1)  # noqa: E731
        W1 = site(s["W"])
        emb = ctx.head(CrystalFormer.site_embeddings, G, W1, site(s["A"]), site(s["XYZ"]), multiplicities(G, W1))
        raw, cache = ctx.head(CrystalFormer.decode_step, G, emb[:, 0, kind], s["cache"], t)
        candidates = jnp.stack([
            ctx.head(CrystalFormer.atom_lattice_head, raw, W_i),
            ctx.head(CrystalFormer.coord_head, raw),
            ctx.head(CrystalFormer.coord_head, raw),
            ctx.head(CrystalFormer.coord_head, raw),
            ctx.head(CrystalFormer.wyckoff_head, raw, G, W_i),
        ])
        return candidates[kind], cache
    full = ctx.model.apply(ctx.variables, G, s["XYZ"], s["A"], s["W"], multiplicities(G, s["W"]), True)
    return jax.lax.dynamic_index_in_dim(full, t + 1, axis=1, keepdims=False), s["cache"]


def _next_atom(ctx: _Decoding, row, k, s: dict) -> dict:
    """Fed W_i: draw A_i, keep the lattice row of site i."""
    i = s["t"] // 5
    W_i = s["W"][:, i]
    logits = row[:, :ctx.config.atom_types] + jnp.where(ctx.atom_mask, 0.0, -1e10)
    a = _categorical(k, logits, ctx.temperature, ctx.top_p)
    return {**s, "A": s["A"].at[:, i].set(a), "lat_rows": s["lat_rows"].at[:, i].set(row),
            "lp_a": s["lp_a"] + row[jnp.arange(ctx.B), a],
            "stop": jnp.all(W_i == 0)}


def _next_coord(ctx: _Decoding, d: int, row, k, s: dict) -> dict:
    """Fed A_i / X_i / Y_i: draw coordinate d of site i, project it onto the Wyckoff position."""
    i = s["t"] // 5
    W_i = s["W"][:, i]
    G, B = ctx.G, ctx.B
    x = _draw_coordinate(k, row, ctx.config.Kx, ctx.temperature, ctx.top_p)
    point = s["XYZ"][:, i].at[:, d].set(x)
    point = point.at[:, d + 1:].set(0.0)
    op = ctx.first_op[G - 1, W_i]                                   # (B, 3, 4)
    proj = jnp.einsum("bij,bj->bi", op, jnp.concatenate([point, jnp.ones((B, 1), ctx.dtype)], axis=1))
    x = (proj - jnp.floor(proj))[:, d]
    free = ctx.fc_mask[G - 1, W_i][:, d] & (W_i > 0)
    lp = jnp.where(free, coord_logpdf(row, x, ctx.config.Kx), 0.0)
    return {**s, "XYZ": s["XYZ"].at[:, i, d].set(x), "lp_xyz": s["lp_xyz"] + lp}


def _next_wyckoff(ctx: _Decoding, row, k, s: dict) -> dict:
    """Fed Z_i: draw W_{i+1}; the last site is always padding."""
    n = ctx.config.n_max
    i = s["t"] // 5
    j = jnp.minimum(i + 1, n - 1)
    letters = jnp.arange(ctx.config.wyck_types)
    logits = jnp.where((j == n - 1) & (letters > 0), -1e10, row[:, :ctx.config.wyck_types])
    w = _categorical(k, logits, ctx.temperature, ctx.top_p)
    valid = i + 1 < n
    return {**s, "W": jnp.where(valid, s["W"].at[:, j].set(w), s["W"]),
            "lp_w": s["lp_w"] + jnp.where(valid, row[jnp.arange(ctx.B), w], 0.0)}


def _decode_one_token(ctx: _Decoding, s: dict) -> dict:
    """One step of the loop: the output row of token t, then the draw its kind calls for (atom, x, y, z,
    next Wyckoff letter)."""
    row, cache = _output_row(ctx, s)
    t = s["t"]
    k = jax.random.fold_in(ctx.key, t + 1)
    steps = [functools.partial(_next_atom, ctx, row, k)]
    steps += [functools.partial(_next_coord, ctx, d, row, k) for d in range(3)]
    steps.append(functools.partial(_next_wyckoff, ctx, row, k))
    # the cache stays out of the switch: passed through a conditional, XLA copies it every step
    s = jax.lax.switch(t % 5, steps, {name: value for name, value in s.items() if name != "cache"})
    return {**s, "cache": cache, "t": t + 1}


def _lattice_from_row(config: ModelConfig, key, lrow, G, num_atoms, temperature, top_p):
    """Lattice (B, 6), normalised, drawn from the Gaussian mixture of the rows ``lrow`` (B, output_size)
    (the model's output at the first padding site: its distribution of the cell given every site) and
    symmetrised to the crystal system; and its log-density under the model (T = 1)."""
    B = G.shape[0]
    rows = jnp.arange(B)
    Kl, a0 = config.Kl, config.atom_types
    k_comp, k_norm = jax.random.split(key)
    comp = _categorical(k_comp, lrow[:, a0:a0 + Kl], temperature, top_p)
    mu = lrow[:, a0 + Kl:a0 + 7 * Kl].reshape(B, Kl, 6)[rows, comp]
    sigma = lrow[:, a0 + 7 * Kl:a0 + 13 * Kl].reshape(B, Kl, 6)[rows, comp]
    L = mu + sigma * jnp.sqrt(temperature) * jax.random.normal(k_norm, (B, 6), lrow.dtype)
    L = lat.normalize(lat.symmetrize(G, lat.denormalize(L, num_atoms)), num_atoms)
    return L, lattice_logpdf(lrow, L, G, config)


def _lattice_row(ctx: _Decoding, state: dict):
    """The output row (B, output_size) the lattice is read from: that of the first padding site."""
    num_sites = jnp.sum(state["A"] != 0, axis=1)
    return state["lat_rows"][jnp.arange(ctx.B), num_sites]


def _decode(config: ModelConfig, params, key, G, temperature, top_p, atom_mask, use_cache: bool):
    """Sample one batch. Returns (W, A, XYZ, L_normalised, logp dict, lattice row); everything (B, …)."""
    B, n, T = G.shape[0], config.n_max, config.seq_len
    dtype = jnp.result_type(float)
    tables = wyckoff.tables()
    ctx = _Decoding(config, CrystalFormer(config), {"params": params}, key, G, temperature, top_p, atom_mask,
                    use_cache, jnp.asarray(tables.first_op, dtype), jnp.asarray(tables.fc_mask), dtype)
    spans = [x for x in DECODE_SPANS if use_cache and x < T] + [T]     # cache lengths, in decoding phases

    # W_0 from the space group alone
    h0 = ctx.head(CrystalFormer.first_w_logprobs, G)
    W0 = _categorical(jax.random.fold_in(key, 0), h0, temperature, top_p)
    state = dict(
        t=jnp.int32(0), stop=jnp.bool_(False),
        W=jnp.zeros((B, n), jnp.int32).at[:, 0].set(W0),
        A=jnp.zeros((B, n), jnp.int32),
        XYZ=jnp.zeros((B, n, 3), dtype),
        lat_rows=jnp.zeros((B, n, config.output_size), dtype),
        lp_w=h0[jnp.arange(B), W0], lp_a=jnp.zeros(B, dtype), lp_xyz=jnp.zeros(B, dtype),
        cache=init_cache(config, B, dtype, spans[0]) if use_cache else jnp.zeros(()),
    )

    # Most crystals stop after a few sites, and each step reads the whole cache: decode with a short
    # cache first and grow it only if some row goes on (each phase compiles its own loop body; the
    # empty slots are masked, so the samples are the same as with one full-length cache).
    step = functools.partial(_decode_one_token, ctx)
    for end in spans:
        if end > spans[0]:
            state = {**state, "cache": grow_cache(state["cache"], end)}
        state = jax.lax.while_loop(lambda s, end=end: (s["t"] < end) & ~s["stop"], step, state)

    W = state["W"]
    lrow = _lattice_row(ctx, state)
    num_atoms = jnp.sum(multiplicities(G, W), axis=1)
    L, lp_l = _lattice_from_row(config, jax.random.fold_in(key, config.seq_len + 1), lrow, G, num_atoms,
                                temperature, top_p)
    XYZ = jnp.where((W > 0)[..., None], state["XYZ"], 0.0)
    logp = {"w": state["lp_w"], "a": state["lp_a"], "xyz": state["lp_xyz"], "l": lp_l}
    return W, state["A"], XYZ, L, logp, lrow


@functools.lru_cache(maxsize=32)
def _compiled(config: ModelConfig, use_cache: bool, top_p: float):
    return jax.jit(lambda params, key, G, temperature, atom_mask:
                   _decode(config, params, key, G, temperature, top_p, atom_mask, use_cache))


@functools.lru_cache(maxsize=32)
def _compiled_lattices(config: ModelConfig, top_p: float, tries: int):
    """``tries`` independent lattices for each row given its sites: (tries, B, 6) normalised, (tries, B) log p.
    No transformer call: the lattice distribution is the row the decoding already computed."""
    def draw(key, lrow, G, num_atoms, temperature):
        keys = jax.random.split(key, tries)
        return jax.vmap(lambda k: _lattice_from_row(config, k, lrow, G, num_atoms, temperature, top_p))(keys)
    return jax.jit(draw)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def element_mask(config: ModelConfig, elements: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None) -> np.ndarray:
    """(atom_types,) bool: which elements may be drawn. Padding (index 0) is always allowed."""
    allowed = np.ones(config.atom_types, bool)
    if elements:
        allowed[:] = False
        for sym in elements:
            allowed[_index(config, sym)] = True
    for sym in exclude or ():
        allowed[_index(config, sym)] = False
    allowed[0] = True
    if not allowed[1:].any():
        raise InvalidInputError("the element allow/deny lists leave no element to sample")
    return allowed


def _index(config: ModelConfig, symbol: str) -> int:
    z = atomic_number(symbol)
    if z >= config.atom_types:
        raise InvalidInputError(f"element {symbol} (Z={z}) is outside this model's {config.atom_types - 1} atom types")
    return z


def resolve_spacegroups(spacegroup, num: int, rng: np.random.Generator,
                        distribution: dict[int, float] | None = None) -> np.ndarray:
    """Space group per sample: an int, a list (cycled evenly), or "train" (drawn from ``distribution``)."""
    if isinstance(spacegroup, str) and spacegroup.strip().lower() in ("train", "training", "training distribution"):
        if not distribution:
            raise InvalidInputError("this checkpoint records no training space-group distribution; choose space groups")
        dist = {int(g): float(p) for g, p in distribution.items()}  # JSON keys are strings
        groups = np.array(sorted(dist), int)
        p = np.array([dist[g] for g in groups], float)
        return rng.choice(groups, size=num, p=p / p.sum())
    if isinstance(spacegroup, str):
        spacegroup = parse_spacegroups(spacegroup)
    groups = np.atleast_1d(np.asarray(spacegroup))
    if groups.size == 0:
        raise InvalidInputError("no space group given")
    checked = np.array([wyckoff.check_spacegroup(g) for g in groups.tolist()], int)
    return np.resize(checked, num)


def parse_spacegroups(text: str) -> list[int]:
    """'225', '221,225', '1-230' -> list of space group numbers."""
    out: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise InvalidInputError(f"cannot read space group(s) {text!r}: use e.g. 225, 221,225 or 1-230") from None
        out += [wyckoff.check_spacegroup(g) for g in range(first, last + 1)] if hi else [wyckoff.check_spacegroup(first)]
    if not out:
        raise InvalidInputError(f"no space group in {text!r}")
    return out


def chunk_size(config: ModelConfig, batch: int, budget: int = CACHE_BUDGET_BYTES) -> int:
    """Rows decoded at once: the next power of two >= ``batch`` (min 8), so a handful of compiled
    shapes serve every request, capped so the float32 key/value cache fits ``budget`` bytes."""
    per_row = 2 * config.num_layers * config.seq_len * config.num_heads * config.key_size * 4
    cap = 1 << max(0, int(max(1, budget // per_row)).bit_length() - 1)     # a power of two too
    size = max(8, 1 << max(0, int(batch) - 1).bit_length())
    return min(size, cap)


def _decode_rows(checkpoint: Checkpoint, G: np.ndarray, key, temperature: float, top_p: float, mask,
                 use_cache: bool, size: int, progress: Callable[[int, int], None] | None = None) -> dict:
    """Decode the space groups ``G`` in chunks of ``size`` rows (the last padded) from ``key``; numpy arrays
    W, A, XYZ, L and the logp parts w, a, xyz, l, plus ``lrow``, each row's lattice distribution."""
    fn = _compiled(checkpoint.config, use_cache, float(top_p))
    total = len(G)
    out: dict[str, list] = {k: [] for k in ("W", "A", "XYZ", "L", "w", "a", "xyz", "l", "lrow")}
    for c, start in enumerate(range(0, total, size)):
        g = G[start:start + size]
        padded = np.concatenate([g, np.full(size - len(g), g[0], np.int32)])
        W, A, XYZ, L, lp, lrow = fn(checkpoint.params, jax.random.fold_in(key, c), jnp.asarray(padded),
                                    jnp.asarray(temperature, jnp.result_type(float)), mask)
        for name, value in (("W", W), ("A", A), ("XYZ", XYZ), ("L", L), *lp.items(), ("lrow", lrow)):
            out[name].append(np.asarray(value)[:len(g)])
        if progress:
            progress(min(start + size, total), total)
    return {k: np.concatenate(v) for k, v in out.items()}


def sample_arrays(checkpoint: Checkpoint, G: np.ndarray, *, temperature: float = 1.0, top_p: float = 1.0,
                  atom_mask: np.ndarray | None = None, seed: int = 0, use_cache: bool = True,
                  batch_size: int | None = None, progress: Callable[[int, int], None] | None = None,
                  reject_overlaps: bool | OverlapRule = False, lattice_tries: int = LATTICE_TRIES,
                  crystal_rounds: int = CRYSTAL_ROUNDS) -> dict:
    """Sample token arrays for the space groups ``G`` (B,). Returns numpy W, A, XYZ, L (normalised), logp parts.

    Rows are drawn in chunks of ``batch_size`` rows (default ``chunk_size``: a power of two within the cache
    budget), the last one padded, so a few compiled shapes serve every request.

    ``reject_overlaps`` (True for ``OverlapRule()``'s thresholds, or a rule): overlap-aware sampling, see
    ``_reject_overlaps``; the arrays then also hold ``fits`` (B,) bool, ``min_distance`` (B,) Å,
    ``crystal_draws`` and ``lattice_draws`` (B,) int, and ``overlap_reason`` (B,) str ('' when it fits).
    Off (the default), the draws are exactly those of earlier versions for the same seed.
    """
    config = checkpoint.config
    if not (temperature > 0 and math.isfinite(temperature)):
        raise InvalidInputError(f"temperature must be a positive number, got {temperature}")
    if not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p must be in (0, 1], got {top_p}")
    G = np.asarray(G, np.int32)
    size = batch_size or chunk_size(config, len(G))
    mask = jnp.asarray(element_mask(config) if atom_mask is None else atom_mask)
    key = jax.random.PRNGKey(seed)
    if reject_overlaps is False or reject_overlaps is None:
        arrays = _decode_rows(checkpoint, G, key, temperature, top_p, mask, use_cache, size, progress)
        arrays.pop("lrow")
        arrays["G"] = G
        return arrays
    rule = OverlapRule() if reject_overlaps is True else reject_overlaps
    if not isinstance(rule, OverlapRule):
        raise InvalidInputError(f"reject_overlaps must be True, False or an OverlapRule, got {reject_overlaps!r}")
    if int(lattice_tries) < 1 or int(crystal_rounds) < 0:
        raise InvalidInputError(f"lattice_tries must be >= 1 and crystal_rounds >= 0, got {lattice_tries}, {crystal_rounds}")
    # The last chunk is padded to its compiled shape anyway: fill the padding with spare crystals of the
    # first rows' space groups instead of copies of one group. Rows are decoded independently of each
    # other, so the first len(G) rows are exactly the draws above; the spares are free second candidates.
    spare = -len(G) % size
    extended = np.concatenate([G, G[np.arange(spare) % len(G)]]).astype(np.int32)
    drawn = _decode_rows(checkpoint, extended, key, temperature, top_p, mask, use_cache, size, progress)
    arrays = {k: v[:len(G)] for k, v in drawn.items()}
    arrays["G"] = G
    spares = {k: v[len(G):] for k, v in drawn.items()}
    spares["G"] = extended[len(G):]
    # a key no plain draw uses: the plain draws fold the chunk index (< 2^20) into ``key``
    arrays = _reject_overlaps(checkpoint, arrays, spares, jax.random.fold_in(key, 2**20), rule, temperature=temperature,
                              top_p=top_p, mask=mask, use_cache=use_cache, batch_size=batch_size,
                              lattice_tries=int(lattice_tries), crystal_rounds=int(crystal_rounds), first_size=size)
    arrays.pop("lrow")
    return arrays


# ---------------------------------------------------------------------------------------------
# Overlap-aware sampling
# ---------------------------------------------------------------------------------------------


def _reject_overlaps(checkpoint: Checkpoint, arrays: dict, spares: dict, key, rule: OverlapRule, *,
                     temperature: float, top_p: float, mask, use_cache: bool, batch_size: int | None,
                     lattice_tries: int, crystal_rounds: int, first_size: int) -> dict:
    """Replace the rows of ``arrays`` whose atoms overlap (``core.overlap``) by draws that do not.

    ``spares``: more crystals drawn with them, spare k for row ``k % B`` (its second candidate);
    ``first_size``: the rows per chunk of that first decode (later rounds use no more).

    For each row, in order: its crystal with its own lattice; then up to ``lattice_tries - 1`` more
    lattices from the model's exact conditional p(L | sites) (the mixture row the decoding computed:
    no transformer call); if none fits, whole new crystals of the same space group (sites and lattice,
    each again with up to ``lattice_tries`` lattices), in up to ``crystal_rounds`` batched rounds. The
    first candidate that fits is kept; a row nothing fits keeps the candidate that came closest
    (largest distance / threshold) with ``fits`` False. Every returned row is a sequence the model
    drew, and its logp parts are the model's log-likelihood of exactly that sequence.

    Which distribution this samples: the lattice given the sites follows the model restricted to the
    lattices that fit; with ``lattice_tries == 1`` the whole crystal follows the model restricted to
    non-overlapping crystals (given the space group), p(x | G, fits) = p(x | G) 1[fits] / P(fits | G).
    With more lattice tries a set of sites s whose lattices fit with probability q(s) is kept with
    probability 1 - (1 - q(s))^K instead of q(s): sites that fit only in rare cells are favoured over
    the exact restriction, in exchange for fewer whole-crystal redraws (bench/overlap.md).
    """
    config = checkpoint.config
    B = len(arrays["G"])
    best = {k: np.array(v, copy=True) for k, v in arrays.items()}
    fits = np.zeros(B, bool)
    ratio = np.full(B, -np.inf)
    min_distance = np.full(B, np.nan)
    reason = np.array([""] * B, dtype=object)
    crystal_draws = np.zeros(B, np.int64)
    lattice_draws = np.zeros(B, np.int64)
    temperature_j = jnp.asarray(temperature, jnp.result_type(float))

    def consider(cand: dict, owner: np.ndarray, round_key) -> None:
        """Try the candidates ``cand`` (rows; ``owner[k]``: the output row candidate k is for, in the order
        a sequential sampler would draw them) and keep, per owner, the first one that fits."""
        atoms = [overlap.atoms_of_row(cand["G"][k], cand["W"][k], cand["A"][k], cand["XYZ"][k]) for k in range(len(owner))]
        verdicts = [overlap.judge(f, z, overlap.lattice_matrix(cand["L"][k], len(z)), rule) for k, (f, z) in enumerate(atoms)]
        extra = None
        if lattice_tries > 1 and not all(v.fits for v in verdicts):
            # the other lattices of every candidate whose own lattice fails, in one call
            lost = np.array([k for k, v in enumerate(verdicts) if not v.fits])
            num_atoms = np.array([len(atoms[k][1]) for k in lost], np.float64)
            Ls, lps = _retry_lattices(config, round_key, cand["lrow"][lost], cand["G"][lost], num_atoms,
                                      temperature_j, top_p, lattice_tries - 1)
            extra = dict(zip(lost.tolist(), zip(Ls.transpose(1, 0, 2), lps.T)))
        for k, b in enumerate(owner):
            if fits[b]:
                continue                      # an earlier candidate of this row fitted: later ones are never drawn
            crystal_draws[b] += 1
            lattice_draws[b] += 1
            v, L, lp_l = verdicts[k], cand["L"][k], cand["l"][k]
            if not v.fits and extra is not None:
                frac, z = atoms[k]
                for L2, lp2 in zip(*extra[k]):
                    lattice_draws[b] += 1
                    v2 = overlap.judge(frac, z, overlap.lattice_matrix(L2, len(z)), rule)
                    if v2.ratio > v.ratio or v2.fits:
                        v, L, lp_l = v2, L2, lp2
                    if v2.fits:
                        break
            if v.fits or v.ratio > ratio[b] or crystal_draws[b] == 1:
                for name in ("W", "A", "XYZ", "w", "a", "xyz", "lrow"):
                    best[name][b] = cand[name][k]
                best["L"][b], best["l"][b] = L, lp_l
                fits[b], ratio[b], min_distance[b], reason[b] = v.fits, v.ratio, v.min_distance, v.reason or ""

    consider(arrays, np.arange(B), jax.random.fold_in(key, 0))
    if len(spares["G"]):
        consider(spares, np.arange(len(spares["G"])) % B, jax.random.fold_in(key, 1))
    for r in range(1, crystal_rounds + 1):
        todo = np.flatnonzero(~fits)
        if not len(todo):
            break
        # one new crystal per unfinished row, topped up (more candidates for the same rows, in order) to
        # whole chunks of one fixed shape (ROUND_ROWS, or the first decode's chunk when that is smaller),
        # which costs nothing extra and compiles once
        size = batch_size or min(ROUND_ROWS, first_size)
        slots = -(-len(todo) // size) * size
        owner = todo[np.arange(slots) % len(todo)]
        round_key = jax.random.fold_in(key, 1 + r)
        cand = _decode_rows(checkpoint, arrays["G"][owner], round_key, temperature, top_p, mask, use_cache, size)
        cand["G"] = arrays["G"][owner]
        consider(cand, owner, jax.random.fold_in(round_key, 2**20))
    best["G"] = arrays["G"]
    best.update(fits=fits, min_distance=min_distance, crystal_draws=crystal_draws, lattice_draws=lattice_draws,
                overlap_reason=reason.astype(str))
    return best


def _retry_lattices(config: ModelConfig, key, lrow: np.ndarray, G: np.ndarray, num_atoms: np.ndarray, temperature,
                    top_p: float, tries: int) -> tuple[np.ndarray, np.ndarray]:
    """``tries`` more lattices for each of the n rows given its sites (``lrow``: the mixture row the decoding
    computed), in ``ROUND_ROWS``-row chunks (the last padded: one compiled shape); (tries, n, 6) normalised
    lattices and (tries, n) log p."""
    draw = _compiled_lattices(config, float(top_p), tries)
    Ls, lps = [], []
    for c, start in enumerate(range(0, len(G), ROUND_ROWS)):
        part = np.arange(start, min(start + ROUND_ROWS, len(G)))
        idx = np.concatenate([part, np.full(ROUND_ROWS - len(part), part[0])])
        L, lp = draw(jax.random.fold_in(key, c), jnp.asarray(lrow[idx]), jnp.asarray(G[idx]),
                     jnp.asarray(num_atoms[idx], jnp.result_type(float)), temperature)
        Ls.append(np.asarray(L)[:, :len(part)])
        lps.append(np.asarray(lp)[:, :len(part)])
    return np.concatenate(Ls, axis=1), np.concatenate(lps, axis=1)


def precompile(checkpoint: Checkpoint, num: int = 100, *, reject_overlaps: bool = True, spacegroup: int = 225) -> None:
    """Compile every decode shape a request for ``num`` samples can use (T = 1, top_p = 1), so its first call
    does not pay seconds of compilation: the first decode's chunk and, for overlap-aware sampling, the redraw
    rounds' and lattice retries' fixed ``ROUND_ROWS`` chunks, which a draw reaches only when some crystal
    overlaps (so one warm-up draw may not). Draws a few crystals of ``spacegroup``; returns nothing."""
    config = checkpoint.config
    first = chunk_size(config, int(num))
    sizes = {first} | ({min(ROUND_ROWS, first)} if reject_overlaps else set())
    mask = jnp.asarray(element_mask(config))
    key = jax.random.PRNGKey(0)
    temperature = jnp.asarray(1.0, jnp.result_type(float))
    for size in sorted(sizes):
        rows = _decode_rows(checkpoint, np.full(size, spacegroup, np.int32), key, 1.0, 1.0, mask, True, size)
    if reject_overlaps and LATTICE_TRIES > 1:
        _retry_lattices(config, key, rows["lrow"], np.full(len(rows["lrow"]), spacegroup, np.int32),
                        np.ones(len(rows["lrow"])), temperature, 1.0, LATTICE_TRIES - 1)


def sample(checkpoint: Checkpoint, spacegroup: int | Sequence[int] | str = 225, num: int = 10, *,
           temperature: float = 1.0, top_p: float = 1.0, elements: Sequence[str] | None = None,
           exclude: Sequence[str] | None = None, seed: int = 0, use_cache: bool = True,
           batch_size: int | None = None, progress: Callable[[int, int], None] | None = None,
           reject_overlaps: bool | OverlapRule = False, lattice_tries: int = LATTICE_TRIES,
           crystal_rounds: int = CRYSTAL_ROUNDS) -> list[Sample]:
    """Generate ``num`` crystals.

    Args:
        checkpoint: a loaded model (``core.checkpoint.load_checkpoint``).
        spacegroup: 1..230, a list of them (cycled), a string like "221,225" or "1-230", or "train"
            for the checkpoint's training distribution of space groups.
        temperature: > 0; 1 samples the model's own distribution.
        elements / exclude: element allow-list / deny-list (symbols).
        seed: same seed, same crystals.
        reject_overlaps: overlap-aware sampling (True, or a ``core.overlap.OverlapRule`` with other
            thresholds): a crystal with two atoms closer than the rule's threshold (by default 0.7 × the sum
            of their covalent radii, at least 0.7 Å) is drawn again, first its lattice (up to
            ``lattice_tries`` lattices), then the whole crystal (up to ``crystal_rounds`` batched rounds).
            The samples then follow the model restricted to non-overlapping crystals (exactly so for the
            lattice given the sites; ``sample_arrays`` / ``_reject_overlaps`` say how the lattice retries
            weight the sites), and each ``logp`` is still the model's own log-likelihood of the returned
            sequence, not the restricted distribution's. A crystal nothing fits is returned with
            ``fits=False`` and ``overlap`` saying which atoms clash (never dropped).
    Returns a list of ``Sample`` (structure + token string + log-likelihood); one that cannot be
    built carries an ``error`` instead of a structure.
    """
    num = int(num)
    if num < 1:
        raise InvalidInputError(f"number of samples must be at least 1, got {num}")
    rng = np.random.default_rng(seed)
    G = resolve_spacegroups(spacegroup, num, rng, checkpoint.meta.get("spacegroup_distribution"))
    mask = element_mask(checkpoint.config, elements, exclude)
    arrays = sample_arrays(checkpoint, G, temperature=temperature, top_p=top_p, atom_mask=mask, seed=seed,
                           use_cache=use_cache, batch_size=batch_size, progress=progress,
                           reject_overlaps=reject_overlaps, lattice_tries=lattice_tries, crystal_rounds=crystal_rounds)
    return samples_from_arrays(arrays)


def samples_from_arrays(arrays: dict) -> list[Sample]:
    """Build ``Sample``s (tokens, Structure or error) from ``sample_arrays`` output."""
    out = []
    checked = "fits" in arrays
    for b in range(len(arrays["G"])):
        tokens = CrystalTokens.from_arrays(arrays["G"][b], arrays["L"][b], arrays["XYZ"][b], arrays["A"][b], arrays["W"][b])
        parts = {k: float(arrays[k][b]) for k in ("w", "a", "xyz", "l")}
        s = Sample(tokens, logp=sum(parts.values()), logp_parts=parts)
        if checked:
            s.fits = bool(arrays["fits"][b])
            s.min_distance = float(arrays["min_distance"][b])
            s.overlap = str(arrays["overlap_reason"][b]) or None
            s.draws = int(arrays["crystal_draws"][b])
            s.lattice_draws = int(arrays["lattice_draws"][b])
        try:
            s.structure = tokens.to_structure()
        except InvalidInputError as exc:
            s.error = str(exc)
        except Exception as exc:  # one bad crystal never kills the batch
            s.error = f"could not build structure: {type(exc).__name__}: {exc}"
        out.append(s)
    return out


def acceptance(samples: Sequence[Sample]) -> dict[str, float | int] | None:
    """Overlap-aware sampling in numbers: ``{"samples", "fit", "flagged", "first_draw"}`` (first_draw:
    how many fitted as first drawn, i.e. the model's own rate), or None when the samples were not checked."""
    if not samples or samples[0].fits is None:
        return None
    fit = sum(bool(s.fits) for s in samples)
    first = sum(bool(s.fits) and s.lattice_draws == 1 for s in samples)
    return {"samples": len(samples), "fit": fit, "flagged": len(samples) - fit, "first_draw": first}
