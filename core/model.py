"""The CrystalFormer transformer (Flax) and its output heads.

A crystal is read as the token sequence

    G, (W_0, A_0, X_0, Y_0, Z_0), (W_1, A_1, X_1, Y_1, Z_1), …, lattice

G (space group) conditions every token through its embedding. W_0 is predicted from G alone by a small
MLP; the attention stack runs on the 5·n_max site tokens with rotary position encoding and a causal
mask, and output row t predicts token t+1:

==========================  ===============================================================
row from token               predicts (layout of the ``output_size`` columns)
==========================  ===============================================================
W_i                          A_i log-probs (atom_types) | lattice mixture: logits (Kl), μ (6·Kl), σ (6·Kl)
A_i, X_i, Y_i                X_i, Y_i, Z_i von Mises mixture: log-weights (Kx) | loc (Kx) | κ (Kx)
Z_i                          W_{i+1} log-probs (wyck_types)
==========================  ===============================================================

The lattice mixture is read from the row of the first padding site. All masks (Wyckoff letters in
non-decreasing order, letters beyond the group's range, padding after the first padding site, no atom
on a padding site) follow the reference implementation exactly, so official checkpoints give the same
numbers. Decoding can reuse keys and values of earlier tokens (``KVCache``) instead of recomputing the
prefix; ``decode_step`` and ``__call__`` share every layer.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core import settings, wyckoff
from core.config import ModelConfig

# Compiled decoding loops take seconds to build on a CPU; keep them on disk between processes.
if not jax.config.jax_compilation_cache_dir:
    try:
        jax.config.update("jax_compilation_cache_dir", str(settings.cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception:  # pragma: no cover - a read-only home just means no persistent cache
        pass

NEG_INF = 1e10  # the reference's additive mask value


def _init(key, shape, dtype=jnp.float32):
    """Truncated normal, σ = 0.01, cut at ±2σ (the reference's initialiser)."""
    return 0.01 * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=_init, name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
    # haiku's LayerNorm: eps 1e-5, two-pass variance
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


def _normalize(logits: jax.Array) -> jax.Array:
    return logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)


def rope_tables(key_size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """sin, cos tables (length, key_size) for rotary position encoding (halves rotated together)."""
    freq = 1.0 / (10000.0 ** (jnp.arange(0, key_size, 2, dtype=jnp.float32) / key_size))
    angles = jnp.einsum("i,j->ij", jnp.arange(length), freq, precision=jax.lax.Precision.HIGHEST)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """x: (B, H, T, K); sin/cos: (T, K) for the positions of x."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin


class KVCache(NamedTuple):
    """Keys and values of each layer for all positions decoded so far, one (B, H, T, K) array per layer.

    Separate per-layer arrays let XLA update them in place inside the decoding loop.
    """

    keys: tuple
    values: tuple


class Attention(nn.Module):
    num_heads: int
    key_size: int
    model_size: int
    dropout: float

    @nn.compact
    def __call__(self, x, sin, cos, mask, deterministic, cache_kv=None, position=None):
        """x: (B, T, D). ``mask`` (B|1, 1, T, S) is True where attention is allowed.

        With ``cache_kv`` = (keys, values) of shape (B, H, S, K), x holds one token at ``position``:
        its key and value are written into the cache and attention runs over all S slots.
        Returns (output (B, T, D), updated cache_kv or None).
        """
        B, T, _ = x.shape
        H, K = self.num_heads, self.key_size
        heads = lambda y: y.reshape(B, T, H, K).transpose(0, 2, 1, 3)  # (B, H, T, K)
        q = apply_rope(heads(_dense(H * K, "query")(x)), sin, cos)
        k = apply_rope(heads(_dense(H * K, "key")(x)), sin, cos)
        v = heads(_dense(H * K, "value")(x))
        if cache_kv is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k, position, axis=2)
            v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v, position, axis=2)
            cache_kv = (k, v)
        logits = jnp.einsum("bhtd,bhsd->bhts", q, k) / np.sqrt(K).astype(x.dtype)
        logits = jnp.where(mask, logits, -1e30)
        weights = jax.nn.softmax(logits)
        weights = nn.Dropout(self.dropout)(weights, deterministic=deterministic)
        out = jnp.einsum("bhts,bhsd->bthd", weights, v).reshape(B, T, H * K)
        return _dense(self.model_size, "out")(out), cache_kv


class Block(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, h, sin, cos, mask, deterministic, cache_kv=None, position=None):
        c = self.config
        attn, cache_kv = Attention(c.num_heads, c.key_size, c.model_size, c.attn_dropout, name="attn")(
            _layer_norm("attn_norm")(h), sin, cos, mask, deterministic, cache_kv, position)
        h = h + nn.Dropout(c.dropout_rate)(attn, deterministic=deterministic)
        dense = _dense(c.widening_factor * c.model_size, "mlp_in")(_layer_norm("mlp_norm")(h))
        dense = _dense(c.model_size, "mlp_out")(jax.nn.gelu(dense))
        h = h + nn.Dropout(c.dropout_rate)(dense, deterministic=deterministic)
        return h, cache_kv


class CrystalFormer(nn.Module):
    """Autoregressive crystal transformer. Methods take batched arrays (leading axis B).

    Inputs: G (B,) space group 1..230; W, A (B, n) Wyckoff and atom tokens; XYZ (B, n, 3) fractional
    coordinates of each site's representative; M (B, n) multiplicities.
    """

    config: ModelConfig

    def setup(self) -> None:
        c = self.config
        self.g_embeddings = self.param("g_embeddings", _init, (230, c.embed_size))
        self.w_embeddings = self.param("w_embeddings", _init, (c.wyck_types, c.embed_size))
        self.a_embeddings = self.param("a_embeddings", _init, (c.atom_types, c.embed_size))
        if c.h0_size > 0:
            self.first_w_hidden = _dense(c.h0_size, "first_w_hidden")
            self.first_w_out = _dense(c.wyck_types, "first_w_out")
        else:
            self.first_w_table = self.param("first_w_table", _init, (230, c.wyck_types))
        self.embed_w = _dense(c.model_size, "embed_w")
        self.embed_a = _dense(c.model_size, "embed_a")
        self.embed_x = _dense(c.model_size, "embed_x")
        self.embed_y = _dense(c.model_size, "embed_y")
        self.embed_z = _dense(c.model_size, "embed_z")
        self.blocks = [Block(c, name=f"block_{i}") for i in range(c.num_layers)]
        self.final_norm = _layer_norm("final_norm")
        self.head = _dense(c.output_size, "head")

    # ---- constants ---------------------------------------------------------------------------
    def _tables(self):
        t = wyckoff.tables()
        return jnp.asarray(t.wmax), jnp.asarray(t.dof0)

    # ---- first Wyckoff letter -----------------------------------------------------------------
    def first_w_logprobs(self, G: jax.Array) -> jax.Array:
        """log p(W_0 | G): (B, wyck_types), masked to letters 1..wmax(G)."""
        c = self.config
        g_emb = self.g_embeddings[G - 1]
        if c.h0_size > 0:
            logits = self.first_w_out(jax.nn.gelu(self.first_w_hidden(g_emb)))
        else:
            logits = self.first_w_table[G - 1]
        wmax, _ = self._tables()
        letters = jnp.arange(c.wyck_types)
        allowed = (letters > 0) & (letters <= wmax[G - 1][:, None])
        return _normalize(jnp.where(allowed, logits, logits - NEG_INF))

    # ---- token embeddings ---------------------------------------------------------------------
    def _fourier(self, x: jax.Array) -> jax.Array:
        f = jnp.arange(1, self.config.Nf + 1, dtype=x.dtype)
        angle = 2 * jnp.pi * x[..., None] * f
        return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(*x.shape, 2 * self.config.Nf)

    def site_embeddings(self, G, W, A, XYZ, M) -> jax.Array:
        """Embeddings of the 5 tokens of every site: (B, n, 5, model_size)."""
        n = W.shape[1]
        g = jnp.broadcast_to(self.g_embeddings[G - 1][:, None, :], (W.shape[0], n, self.config.embed_size))
        hw = self.embed_w(jnp.concatenate([g, self.w_embeddings[W], M[..., None].astype(g.dtype)], axis=-1))
        ha = self.embed_a(jnp.concatenate([g, self.a_embeddings[A]], axis=-1))
        hx = self.embed_x(jnp.concatenate([g, self._fourier(XYZ[..., 0].astype(g.dtype))], axis=-1))
        hy = self.embed_y(jnp.concatenate([g, self._fourier(XYZ[..., 1].astype(g.dtype))], axis=-1))
        hz = self.embed_z(jnp.concatenate([g, self._fourier(XYZ[..., 2].astype(g.dtype))], axis=-1))
        return jnp.stack([hw, ha, hx, hy, hz], axis=2)

    # ---- output heads -------------------------------------------------------------------------
    def atom_lattice_head(self, raw: jax.Array, W_site: jax.Array) -> jax.Array:
        """Row from token W_i: element log-probs given W_i, and the lattice mixture."""
        c = self.config
        a_logit = raw[..., :c.atom_types]
        pad = (W_site == 0)[..., None]
        is_pad_col = jnp.arange(c.atom_types) == 0
        a_mask = jnp.where(pad, ~is_pad_col, is_pad_col)  # padding site: only A=0; real site: no A=0
        a_logit = _normalize(a_logit + jnp.where(a_mask, -NEG_INF, 0.0))
        l0 = c.atom_types
        l_logit = _normalize(raw[..., l0:l0 + c.Kl])
        mu = raw[..., l0 + c.Kl:l0 + 7 * c.Kl]
        sigma = jax.nn.softplus(raw[..., l0 + 7 * c.Kl:l0 + 13 * c.Kl]) + c.sigmamin
        rest = jnp.zeros(raw.shape[:-1] + (c.output_size - c.atom_types - c.lattice_types,), raw.dtype)
        return jnp.concatenate([a_logit, l_logit, mu, sigma, rest], axis=-1)

    def coord_head(self, raw: jax.Array) -> jax.Array:
        """Rows from tokens A_i, X_i, Y_i: von Mises mixture of the next coordinate."""
        Kx = self.config.Kx
        logit = _normalize(raw[..., :Kx])
        kappa = jax.nn.softplus(raw[..., 2 * Kx:3 * Kx])
        rest = jnp.zeros(raw.shape[:-1] + (self.config.output_size - 3 * Kx,), raw.dtype)
        return jnp.concatenate([logit, raw[..., Kx:2 * Kx], kappa, rest], axis=-1)

    def wyckoff_head(self, raw: jax.Array, G: jax.Array, W_site: jax.Array) -> jax.Array:
        """Row from token Z_i: log p(W_{i+1}); letters never decrease, and cannot repeat at fixed points."""
        c = self.config
        wmax, dof0 = self._tables()
        G = jnp.broadcast_to(G.reshape(G.shape + (1,) * (W_site.ndim - 1)), W_site.shape)
        logit = raw[..., :c.wyck_types]
        letters = jnp.arange(c.wyck_types)
        fixed = dof0[G - 1, W_site][..., None]
        w = W_site[..., None]
        smaller = jnp.where(fixed, letters <= w, letters < w) & (letters > 0)
        logit = _normalize(logit - jnp.where(smaller, NEG_INF, 0.0))
        logit = _normalize(jnp.where((w == 0) & (letters == 0), NEG_INF, logit))  # padding stays padding
        logit = _normalize(jnp.where(letters <= wmax[G - 1][..., None], logit, logit - NEG_INF))
        rest = jnp.zeros(raw.shape[:-1] + (c.output_size - c.wyck_types,), raw.dtype)
        return jnp.concatenate([logit, rest], axis=-1)

    def heads(self, raw: jax.Array, G: jax.Array, W: jax.Array) -> jax.Array:
        """Raw outputs (B, n, 5, out) of all site tokens -> distributions, same layout."""
        return jnp.stack([
            self.atom_lattice_head(raw[:, :, 0], W),
            self.coord_head(raw[:, :, 1]),
            self.coord_head(raw[:, :, 2]),
            self.coord_head(raw[:, :, 3]),
            self.wyckoff_head(raw[:, :, 4], G, W),
        ], axis=2)

    # ---- the transformer ------------------------------------------------------------------------
    def _trunk(self, h, sin, cos, mask, deterministic, cache=None, position=None):
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
            h, layer_cache = block(h, sin, cos, mask, deterministic, layer_cache, position)
            if cache is not None:
                new_keys.append(layer_cache[0])
                new_values.append(layer_cache[1])
        raw = self.head(self.final_norm(h))
        return raw, (None if cache is None else KVCache(tuple(new_keys), tuple(new_values)))

    def __call__(self, G, XYZ, A, W, M, deterministic: bool = True) -> jax.Array:
        """Full forward pass: (B, 5n+1, output_size), row 0 = log p(W_0 | G), as the reference lays it out."""
        B, n = W.shape
        T = 5 * n
        h = self.site_embeddings(G, W, A, XYZ, M).reshape(B, T, -1)
        sin, cos = rope_tables(self.config.key_size, T)
        mask = jnp.tril(jnp.ones((T, T), dtype=bool))[None, None]
        raw, _ = self._trunk(h, sin.astype(h.dtype), cos.astype(h.dtype), mask, deterministic)
        out = self.heads(raw.reshape(B, n, 5, -1), G, W).reshape(B, T, -1)
        h0 = self.first_w_logprobs(G)
        h0 = jnp.concatenate([h0, jnp.zeros((B, self.config.output_size - self.config.wyck_types), h0.dtype)], -1)
        return jnp.concatenate([h0[:, None], out], axis=1)

    def decode_step(self, G, token_embedding, cache: KVCache, position) -> tuple[jax.Array, KVCache]:
        """One token at ``position`` (scalar, same for the batch) through the stack with a KV cache.

        token_embedding: (B, model_size). Returns the raw output row (B, output_size) and the new cache.
        """
        S = cache.keys[0].shape[2]
        sin, cos = rope_tables(self.config.key_size, S)
        sin = jax.lax.dynamic_slice_in_dim(sin, position, 1).astype(token_embedding.dtype)
        cos = jax.lax.dynamic_slice_in_dim(cos, position, 1).astype(token_embedding.dtype)
        mask = (jnp.arange(S) <= position)[None, None, None, :]
        raw, cache = self._trunk(token_embedding[:, None, :], sin, cos, mask, True, cache, position)
        return raw[:, 0], cache

def init_cache(config: ModelConfig, batch: int, dtype=jnp.float32, length: int | None = None) -> KVCache:
    """Empty key/value cache for ``batch`` sequences of ``length`` (default ``config.seq_len``) tokens."""
    shape = (batch, config.num_heads, length or config.seq_len, config.key_size)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(zeros, zeros)


def grow_cache(cache: KVCache, length: int) -> KVCache:
    """The same cache with empty slots appended up to ``length`` tokens (decoding continues past the old end)."""
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)))
    return KVCache(tuple(map(pad, cache.keys)), tuple(map(pad, cache.values)))


def init_params(config: ModelConfig, seed: int = 42) -> dict:
    """Fresh parameters for ``config`` (the reference's initialiser)."""
    model = CrystalFormer(config)
    n = config.n_max
    G = jnp.array([1])
    zeros = jnp.zeros((1, n), dtype=jnp.int32)
    variables = model.init(jax.random.PRNGKey(seed), G, jnp.zeros((1, n, 3)), zeros, zeros, zeros)
    return variables["params"]


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
