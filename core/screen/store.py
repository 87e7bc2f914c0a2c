"""A screen's output folder: a manifest and one Parquet file per finished batch.

    DIR/manifest.json            format, spec, checkpoint digest, number of batches, status, timestamps
    DIR/batches/batch_000042.parquet
                                 the rows of batch 42 (one per sampled crystal), written to a hidden
                                 temporary file and renamed into place, so a file either holds the
                                 whole batch or does not exist
    DIR/unique.parquet           screen-wide uniqueness (sample_id, unique), written when a run ends
    DIR/summary.json             counts and top figures of merit, written when a run ends
    DIR/.lock                    held (flock) by the process running the screen

A batch is done when its file exists; nothing else records progress, so a crash can never leave
a batch counted but missing, and a rerun recomputes only the batches without a file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from core.errors import InvalidInputError

FORMAT = "crystalformer-rl-screen/1"
MANIFEST = "manifest.json"
BATCH_GLOB = "batch_*.parquet"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ScreenStore:
    """Reads and writes one screen folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        self.batches = self.folder / "batches"

    # ---- manifest ------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise InvalidInputError(f"{self.folder} is not a screen folder (no {MANIFEST})") from None
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.manifest_path} is unreadable ({exc})") from None
        if data.get("format") != FORMAT:
            raise InvalidInputError(f"{self.manifest_path} is not a screen manifest (format {data.get('format')!r})")
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.manifest_path, (json.dumps({**data, "updated": _now()}, indent=1) + "\n").encode())

    def create_or_check(self, spec: dict[str, Any], digest: str, n_batches: int) -> dict[str, Any]:
        """Start a new screen or check that ``spec`` is the one this folder was started with.

        Raises:
            InvalidInputError: the folder holds a screen with other parameters (names each difference),
                or the checkpoint's files changed since the screen started.
        """
        if not self.exists():
            if self.folder.exists() and any(not p.name.startswith(".") for p in self.folder.iterdir()):
                raise InvalidInputError(f"--out {self.folder} exists and is not a screen folder; choose an empty or new folder")
            manifest = {"format": FORMAT, "spec": spec, "checkpoint_digest": digest, "n_batches": n_batches,
                        "status": "running", "created": _now()}
            self.write_manifest(manifest)
            return manifest
        manifest = self.manifest()
        old = manifest.get("spec", {})
        differences = [f"{key}: {old.get(key)!r} in the screen, {spec.get(key)!r} now"
                       for key in sorted(set(old) | set(spec)) if key != "checkpoint" and old.get(key) != spec.get(key)]
        if manifest.get("checkpoint_digest") != digest:
            differences.append(f"checkpoint: the model files differ from those the screen started with ({old.get('checkpoint')})")
        if differences:
            raise InvalidInputError(f"{self.folder} holds a screen with other parameters; rerun with the same ones "
                                    f"to resume, or choose another --out. Differences: {'; '.join(differences)}")
        return manifest

    def set_status(self, status: str, **extra: Any) -> None:
        self.write_manifest({**self.manifest(), "status": status, **extra})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one running process; a second one is refused with a clear message."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise InvalidInputError(f"{self.folder} is being screened by another process ({fh.read().strip() or 'pid unknown'})") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- batches -------------------------------------------------------------------------------
    def batch_path(self, batch_id: int) -> Path:
        return self.batches / f"batch_{batch_id:06d}.parquet"

    def done(self) -> set[int]:
        """Ids of the batches whose file exists."""
        if not self.batches.exists():
            return set()
        return {int(p.stem.split("_")[1]) for p in self.batches.glob(BATCH_GLOB)}

    def write_batch(self, batch_id: int, frame: pd.DataFrame) -> None:
        """Store a finished batch atomically (a batch's rows are deterministic, so rewriting one changes nothing)."""
        self.batches.mkdir(parents=True, exist_ok=True)
        for stale in self.batches.glob(f".batch_{batch_id:06d}.parquet.*.tmp"):
            stale.unlink(missing_ok=True)
        atomic_write_bytes(self.batch_path(batch_id), frame.to_parquet(index=False))

    def read_rows(self) -> pd.DataFrame:
        """All finished rows, ordered by sample_id (empty frame when no batch is done yet)."""
        files = sorted(self.batches.glob(BATCH_GLOB)) if self.batches.exists() else []
        frames = [pd.read_parquet(p) for p in files]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True).sort_values("sample_id", kind="stable").reset_index(drop=True)

    # ---- results of the last run -------------------------------------------------------------
    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_bytes(self.folder / name, (json.dumps(data, indent=1, default=str) + "\n").encode())

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        atomic_write_bytes(self.folder / name, frame.to_parquet(index=False))

    def read_table(self, name: str) -> pd.DataFrame | None:
        path = self.folder / name
        return pd.read_parquet(path) if path.exists() else None
