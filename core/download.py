"""Fetch what ``core/catalogue.json`` lists: official CrystalFormer checkpoints, the Alexandria hull, MLIP weights.

Hub files go through ``huggingface_hub.hf_hub_download`` (it honours ``HF_ENDPOINT``, resumes a cut
transfer with a Range request, and keeps a ``.incomplete`` file so a later call continues an
interrupted one); other files through plain HTTP(S) with the same Range-resume into ``<file>.part``.
Every file is checked before it is put in place: against the hub's sha256 ETag (LFS files; small git
files: their git blob sha1), or the catalogue's pinned sha256; a file without either gets its
sha256 recorded in its card so later checks have one. A file that fails the check is deleted,
never installed.

Where things land (``core.settings``): checkpoints in ``CFRL_CHECKPOINTS_DIR/<folder>/`` (the app's
checkpoint picker lists them at once: a folder holding a ``.pkl``), data in ``CFRL_DATA_DIR/<folder>/``,
MLIP weights in ``CFRL_MODELS_DIR/<folder>/`` (where the backends look). Each gets a card stub
(source, licence, citation, date, sha256): ``MODEL_CARD.md`` in a checkpoint folder,
``<file>.card.md`` beside other files.

``huggingface_hub``'s offline switch (``HF_HUB_OFFLINE=1``, which the app sets so that model loading never
waits on the network) is honoured unless the caller passes ``hub_online=True``: the app's Download button
does, because a click on it is the user asking for the network.

Failures (offline, HTTP error, refused hash) raise ``MissingResourceError`` with one line: what
failed, the URL, and where to put the file by hand.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import settings
from core.errors import InvalidInputError, MissingResourceError

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
HTTP_ATTEMPTS = 5          # a cut connection is resumed this many times before giving up
HTTP_TIMEOUT_S = 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
ROOTS: dict[str, Callable[[], Path]] = {"checkpoint": settings.checkpoints_dir, "data": settings.data_dir,
                                        "mlip": settings.models_dir}

_ONLINE_LOCK = threading.Lock()
Progress = Callable[[int, "int | None"], None]   # (bytes done, total bytes or None)


@dataclass(frozen=True)
class CatalogueItem:
    """One downloadable file (see the ``_about`` of ``core/catalogue.json``)."""

    name: str
    kind: str                       # "checkpoint" | "data" | "mlip"
    title: str
    folder: str
    licence: str
    cite: str = ""
    description: str = ""
    hub: dict[str, str] | None = None   # {"repo", "revision", "path"}
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    config: str | None = None       # checkpoints: "paper" = the paper's hyperparameters (core.config.PAPER)
    mlip: str | None = None         # MLIP registry name that loads these weights (None: no backend here)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        if self.file:
            return self.file
        return Path(self.hub["path"]).name if self.hub else self.name

    @property
    def source_url(self) -> str:
        """The URL the file comes from (hub: the resolve URL at the current ``HF_ENDPOINT``)."""
        if self.hub:
            endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
            return f"{endpoint}/{self.hub['repo']}/resolve/{self.hub.get('revision', 'main')}/{self.hub['path']}"
        return str(self.url)

    def destination(self) -> Path:
        """Where the file is installed."""
        return ROOTS[self.kind]() / self.folder / self.filename

    def card_path(self) -> Path:
        dest = self.destination()
        return dest.parent / "MODEL_CARD.md" if self.kind == "checkpoint" else dest.with_name(dest.name + ".card.md")

    def installed(self) -> bool:
        return self.destination().is_file()


@dataclass(frozen=True)
class DownloadResult:
    item: CatalogueItem
    path: Path
    sha256: str
    size_bytes: int
    checked_against: str          # what the hash was compared with
    already_present: bool = False


def load_catalogue(path: str | Path | None = None) -> dict[str, CatalogueItem]:
    """The catalogue, name -> item (``core/catalogue.json`` unless ``path``)."""
    raw = json.loads(Path(path or CATALOGUE_PATH).read_text())
    known = set(CatalogueItem.__dataclass_fields__) - {"name", "extra"}
    items = {}
    for name, entry in raw["items"].items():
        items[name] = CatalogueItem(name=name, **{k: v for k, v in entry.items() if k in known},
                                    extra={k: v for k, v in entry.items() if k not in known})
    return items


def catalogue_item(name: str) -> CatalogueItem:
    """The catalogue item ``name``. Raises InvalidInputError naming the choices."""
    items = load_catalogue()
    if name not in items:
        raise InvalidInputError(f"nothing called {name!r} in the catalogue; choose from {', '.join(items)}")
    return items[name]


# ---------------------------------------------------------------- integrity


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the hub's ETag is for files not stored in LFS)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str | None, what: str) -> tuple[str, str]:
    """(sha256 of ``path``, what it was checked against); deletes the file and raises on a mismatch."""
    sha256 = file_sha256(path)
    expected = (expected or "").strip().strip('"').lower()
    if not expected:
        return sha256, "nothing (no published hash: sha256 recorded in the card)"
    got = sha256 if _SHA256.match(expected) else git_blob_sha1(path) if _SHA1.match(expected) else None
    if got is None:
        return sha256, f"nothing ({what} {expected!r} is not a hash)"
    if got != expected:
        path.unlink(missing_ok=True)
        raise MissingResourceError(f"corrupted download refused: {path.name} has hash {got[:16]}… but {what} says "
                                   f"{expected[:16]}…; the file was deleted, run the download again")
    return sha256, what


# ---------------------------------------------------------------- transfers


def _hub_progress_class(progress: Progress | None):
    """A tqdm class for ``hf_hub_download`` that reports bytes to ``progress`` (None: the hub's own bar)."""
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hub_tqdm

    class CallbackBar(hub_tqdm):
        def __init__(self, *args, **kw):
            kw["disable"] = True
            super().__init__(*args, **kw)
            self._done, self._total = int(kw.get("initial") or 0), kw.get("total")
            progress(self._done, self._total)

        def update(self, n=1):
            self._done += int(n or 0)
            progress(self._done, self._total)
            return super().update(n)

    return CallbackBar


def _fetch_hub(item: CatalogueItem, staging: Path, progress: Progress | None, force: bool) -> tuple[Path, str | None, str]:
    """Download a hub file into ``staging``; (local path, expected hash, what the hash is)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None     # read now, not at huggingface_hub's import
    repo, path, revision = item.hub["repo"], item.hub["path"], item.hub.get("revision", "main")
    metadata = get_hf_file_metadata(hf_hub_url(repo, path, revision=revision, endpoint=endpoint))
    local = hf_hub_download(repo, path, revision=revision, local_dir=staging, endpoint=endpoint,
                            force_download=force, tqdm_class=_hub_progress_class(progress))
    expected, what = (item.sha256, "the catalogue's pinned sha256") if item.sha256 else (metadata.etag, "the hub's ETag")
    return Path(local), expected, what


def _fetch_url(item: CatalogueItem, staging: Path, progress: Progress | None, force: bool) -> tuple[Path, str | None, str]:
    """Download a plain URL into ``staging/<file>`` with Range-resume from ``<file>.part``."""
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / (item.filename + ".part")
    if force:
        part.unlink(missing_ok=True)
    for attempt in range(HTTP_ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(str(item.url), headers={"User-Agent": "crystalformer-rl-explorer",
                                                                 **({"Range": f"bytes={have}-"} if have else {})})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                if have and response.status == 200:      # the server ignored the Range: start over
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else item.size_bytes
                done = have
                with open(part, "ab" if have else "wb") as out:
                    if progress:
                        progress(done, total)
                    while block := response.read(CHUNK_BYTES):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
                if total is not None and done < total:
                    raise ConnectionError(f"connection closed after {done} of {total} bytes")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:                 # nothing left to fetch: the part is complete
                break
            raise
        except (ConnectionError, TimeoutError, OSError) as exc:
            if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, (ConnectionError, TimeoutError)):
                raise                                     # DNS failure, refused host: no point retrying
            if attempt == HTTP_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    local = staging / item.filename
    part.replace(local)
    return local, item.sha256, "the catalogue's pinned sha256"


def _write_card(item: CatalogueItem, result: DownloadResult) -> None:
    lines = [f"# {item.title}", "",
             f"Downloaded with `python -m core download {item.name}` on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC.", "",
             f"- source: {item.source_url}", f"- licence: {item.licence}"]
    if item.cite:
        lines.append(f"- cite: {item.cite}")
    lines += [f"- file: {result.path.name} ({result.size_bytes / 1e6:.1f} MB)",
              f"- sha256: {result.sha256} (checked against {result.checked_against})"]
    if item.kind == "checkpoint" and item.config == "paper":
        memory = paper_memory()
        lines.append(f"- config: the paper's hyperparameters (no config file needed): {memory['parameters']:,} "
                     f"parameters; {memory_text(memory)}")
    if item.mlip:
        lines.append(f"- use: MLIP name `{item.mlip}` (e.g. `python -m core score ... --mlip {item.mlip}`)")
    if item.description:
        lines += ["", item.description]
    item.card_path().write_text("\n".join(lines) + "\n")


def recorded_sha256(item: CatalogueItem) -> str | None:
    """The sha256 written in the item's card by an earlier download (None: no card)."""
    card = item.card_path()
    if not card.is_file():
        return None
    match = re.search(r"^- sha256: ([0-9a-f]{64})", card.read_text(), re.M)
    return match.group(1) if match else None


@contextlib.contextmanager
def _hub_reachable(allow: bool):
    """While inside, huggingface_hub's offline switch is off if ``allow`` (it is read per request)."""
    if not allow:
        yield
        return
    import huggingface_hub.constants as hub_constants

    with _ONLINE_LOCK:
        before, hub_constants.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE, False
        try:
            yield
        finally:
            hub_constants.HF_HUB_OFFLINE = before


def download(item: CatalogueItem | str, progress: Progress | None = None, force: bool = False,
             hub_online: bool = False) -> DownloadResult:
    """Fetch, check and install one catalogue item; returns where it is.

    Args:
        item: a catalogue item or its name.
        progress: called with (bytes done, total bytes or None) as the transfer goes (None: hub files show
            huggingface_hub's tqdm bar, other files nothing).
        force: download again even if the file is installed (and discard a partial download).
        hub_online: reach the hub even when huggingface_hub's offline switch is on (an explicit request).

    Raises:
        InvalidInputError: unknown name.
        MissingResourceError: the transfer failed (offline, HTTP error) or the file failed its hash check;
            one line with the URL and where to put the file by hand.
    """
    item = catalogue_item(item) if isinstance(item, str) else item
    dest = item.destination()
    if dest.is_file() and not force:
        sha = recorded_sha256(item)
        if sha is None:                                   # placed by hand: record what is there
            result = DownloadResult(item, dest, file_sha256(dest), dest.stat().st_size,
                                    "nothing (placed by hand; sha256 recorded)", already_present=True)
            _write_card(item, result)
            return result
        if file_sha256(dest) == sha:
            return DownloadResult(item, dest, sha, dest.stat().st_size, "its card", already_present=True)
    staging = dest.parent / f".download-{item.name}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fetch = _fetch_hub if item.hub else _fetch_url
        with _hub_reachable(hub_online):
            local, expected, what = fetch(item, staging, progress, force)
        sha256, checked = _check(local, expected, what)
        local.replace(dest)
    except MissingResourceError as exc:
        shutil.rmtree(staging, ignore_errors=True)       # a refused file must not be resumed
        raise MissingResourceError(f"{item.name}: {exc}. URL: {item.source_url}") from exc
    except Exception as exc:  # noqa: BLE001 - offline, HTTP status, disk: one line for the user
        raise MissingResourceError(_failure_line(item, exc)) from exc
    shutil.rmtree(staging, ignore_errors=True)
    result = DownloadResult(item, dest, sha256, dest.stat().st_size, checked)
    _write_card(item, result)
    return result


def _failure_line(item: CatalogueItem, exc: BaseException) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 200:
        reason = reason[:200] + "…"
    return (f"download of {item.name} failed ({type(exc).__name__}: {reason}). URL: {item.source_url} — to place it "
            f"by hand, download that file and save it as {item.destination()}, then run "
            f"`python -m core download {item.name}` again to check it and write its card")


# ---------------------------------------------------------------- memory of the paper config


def paper_memory(config=None) -> dict[str, int]:
    """Memory (bytes) a CrystalFormer of ``config`` (default: the paper's) needs, from its parameter count.

    ``parameters``: count; ``weights``: float32 parameters; ``sampling``: weights plus the sampler's
    largest key/value-cache chunk (``core.sampler.CACHE_BUDGET_BYTES`` caps it); ``training``: weights,
    gradients and two Adam moments (4 × weights) plus the same cache-sized activations budget.
    """
    import jax

    from core.config import PAPER
    from core.model import count_params, init_params
    from core.sampler import chunk_size

    config = config or PAPER
    n = count_params(jax.eval_shape(lambda: init_params(config)))
    weights = 4 * n
    per_row = 2 * config.num_layers * config.seq_len * config.num_heads * config.key_size * 4
    cache = per_row * chunk_size(config, 1 << 20)
    return {"parameters": n, "weights": weights, "sampling": weights + cache, "training": 4 * weights + cache,
            "cache_per_crystal": per_row}


def memory_text(memory: dict[str, int]) -> str:
    """One line for users: '19 MB of float32 weights; sampling needs about … MB …'."""
    mb = lambda b: f"{b / 2**20:,.0f} MB"   # noqa: E731
    return (f"{mb(memory['weights'])} of float32 weights; sampling needs about {mb(memory['sampling'])} of (GPU or CPU) "
            f"memory ({memory['cache_per_crystal'] / 2**20:.1f} MB of key/value cache per crystal decoded at once), "
            f"fine-tuning about {mb(memory['training'])} plus the batch's activations")
