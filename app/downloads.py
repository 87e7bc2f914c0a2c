"""The Models page's logic: what the catalogue offers, what is installed, and a download with a progress bar.

Downloads run in the script run that the button starts (``core.download.download`` with ``hub_online=True``:
the click is the user asking for the network, although the app keeps ``HF_HUB_OFFLINE=1`` for model
loading) and report their bytes to an ``st.progress`` bar. A finished checkpoint is listed by the
sidebar picker on the rerun that follows.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import streamlit as st

from core.download import CatalogueItem, DownloadResult, download, load_catalogue, memory_text, paper_memory

KIND_TITLES = {"checkpoint": "CrystalFormer checkpoints", "data": "Reference data", "mlip": "Interatomic potentials"}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


def catalogue() -> dict[str, list[CatalogueItem]]:
    """Catalogue items grouped by kind, in KIND_TITLES order."""
    items = load_catalogue().values()
    return {kind: [i for i in items if i.kind == kind] for kind in KIND_TITLES}


@functools.cache
def memory_line() -> str:
    """What the paper config needs, from its parameter count, and where JAX would run it."""
    import jax

    memory = paper_memory()
    backend = jax.default_backend()
    where = ("on the GPU JAX sees" if backend == "gpu" else
             "on the CPU here (with a GPU and JAX's CUDA build it runs there automatically)")
    return (f"The official checkpoints use the paper's configuration: {memory['parameters']:,} parameters, "
            f"{memory_text(memory)}. Sampling runs {where}.")


def describe(item: CatalogueItem) -> str:
    size = f" · {item.size_bytes / 1e6:,.0f} MB" if item.size_bytes else ""
    use = f" · MLIP name `{item.mlip}`" if item.mlip else ""
    return f"{item.description} Licence: {item.licence}{size}{use}. Goes to `{item.destination()}`."


def run_download(item: CatalogueItem, container=None) -> Outcome:
    """Download ``item`` with a live ``st.progress`` bar in ``container``; what to tell the user."""
    box = container or st
    bar = box.progress(0.0, text=f"{item.name}: connecting…")

    def progress(done: int, total: int | None) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        of = f" of {total / 1e6:,.1f}" if total else ""
        bar.progress(fraction, text=f"{item.name}: {done / 1e6:,.1f}{of} MB")

    try:
        result: DownloadResult = download(item, progress=progress, hub_online=True)
    except Exception as exc:  # noqa: BLE001 - one line for the user, the app keeps running
        bar.empty()
        return Outcome(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    bar.progress(1.0, text=f"{item.name}: done")
    where = " It is now in the sidebar's model picker." if item.kind == "checkpoint" else ""
    state = "was already here" if result.already_present else f"checked against {result.checked_against}"
    return Outcome(True, f"Downloaded {item.name} to {result.path} ({result.size_bytes / 1e6:,.1f} MB, {state}).{where}")
