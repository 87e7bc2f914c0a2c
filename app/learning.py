"""Teaching helpers for the Learn and Start-here pages: the token table as a reader sees it, and the crystal
built site by site as the model writes it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

FIXED = "fixed"     # a coordinate the Wyckoff position fixes: the model writes nothing, no probability
NONE = "—"          # no value for this kind of token (e.g. no probability for a continuous coordinate)


def token_table(steps) -> pd.DataFrame:
    """One row per token: step, site, kind, token, probability (text), log p (nats, text), note.

    Continuous tokens have no probability ("—"); coordinates fixed by the Wyckoff position have no log p
    ("fixed"), so a reader never sees a bare "None".
    """
    rows = []
    for k, s in enumerate(steps):
        fixed = s.logp is None and s.note.startswith("fixed")
        probability = s.probability
        rows.append({
            "step": k + 1,
            "site": str(s.site + 1) if s.site is not None else NONE,
            "kind": s.kind,
            "token": s.token if s.token not in (None, "") else NONE,
            "probability": f"{probability:.3f}" if probability is not None else (FIXED if fixed else NONE),
            "log p (nats)": f"{s.logp:.2f}" if s.logp is not None else (FIXED if fixed else NONE),
            "note": s.note or "",
        })
    return pd.DataFrame(rows, columns=["step", "site", "kind", "token", "probability", "log p (nats)", "note"])


def sites_complete(steps, k: int) -> int:
    """How many sites (Wyckoff orbits) are fully written after the first ``k`` tokens.

    A site is complete once its last token (the z coordinate) is written; the lattice comes after all sites.
    """
    done = {s.site for s in steps[:k] if s.site is not None}
    if k < len(steps) and steps[k].site is not None and steps[k].site in done:
        done.discard(steps[k].site)          # the next token still belongs to this site
    return len(done)


def partial_structure(tokens, sites: int):
    """The crystal with only its first ``sites`` Wyckoff orbits, in the final cell (pymatgen Structure, or None
    when ``sites`` is 0 or the orbits cannot be built)."""
    if sites <= 0:
        return None
    part = dataclasses.replace(tokens, wyckoff=np.asarray(tokens.wyckoff)[:sites],
                               species=np.asarray(tokens.species)[:sites], coords=np.asarray(tokens.coords)[:sites])
    try:
        return part.to_structure()
    except Exception:  # noqa: BLE001 - a half-written crystal that cannot be built is simply not drawn
        return None
