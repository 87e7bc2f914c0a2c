"""Downloads against a local hub on 127.0.0.1 (``tests/hub_server.py``) serving the paper-config fixture checkpoint.

The official alex20 checkpoints have the paper's hyperparameters; the fixture
``../shared/fixtures/crystalformer/paper/perturbed/epoch_000000.pkl`` is a reference-format checkpoint of
that config, so it stands in for ``alex20/PBE/epoch_005500.pkl``: download by CLI, resume after a cut
connection, refusal of a corrupted file, the offline message, and sampling from what was downloaded.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import settings
from core.errors import MissingResourceError
from hub_server import HubStub, resolve_path

REPO = Path(__file__).resolve().parent.parent
PAPER = settings.fixtures_dir() / "crystalformer" / "paper"
PKL = PAPER / "perturbed" / "epoch_000000.pkl"
BASE = ("zdcao/CrystalFormer", "alex20/PBE/epoch_005500.pkl")


@pytest.fixture(scope="module")
def pkl_bytes() -> bytes:
    if not PKL.is_file():
        pytest.skip(f"paper fixture checkpoint not found at {PKL} (set CFRL_FIXTURES_DIR)")
    return PKL.read_bytes()


@pytest.fixture
def hub(pkl_bytes):
    stub = HubStub({resolve_path(*BASE): pkl_bytes}).start()
    yield stub
    stub.stop()


@pytest.fixture
def online(monkeypatch, tmp_path, hub):
    """In-process downloads from the stub: its endpoint, private folders, hub offline mode off."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("CFRL_CHECKPOINTS_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CFRL_DATA_DIR", str(tmp_path / "data"))
    return hub


def _cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_cli_download_lands_checked_with_card_and_samples(hub, pkl_bytes, tmp_path):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "CFRL_CHECKPOINTS_DIR": str(tmp_path / "checkpoints"), "CFRL_APP_DATA_DIR": str(tmp_path / "app")}
    done = _cli(["download", "alex20-base"], env)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "checkpoints" / "alex20-base" / "epoch_005500.pkl"
    assert target.read_bytes() == pkl_bytes
    assert "sha256 checked against the hub's ETag" in done.stdout
    card = (target.parent / "MODEL_CARD.md").read_text()
    assert f"{hub.url}/zdcao/CrystalFormer/resolve/main/alex20/PBE/epoch_005500.pkl" in card
    assert "Apache-2.0" in card and __import__("hashlib").sha256(pkl_bytes).hexdigest() in card
    assert not list(target.parent.glob(".download-*"))                # staging cleaned up

    again = _cli(["download", "alex20-base"], env)                     # second call: nothing fetched
    assert again.returncode == 0 and "already present" in again.stdout
    assert len(hub.gets(resolve_path(*BASE))) == 1

    # immediately selectable: the app's picker lists it, and it samples with the paper config
    listed = _cli(["download", "--list"], env)
    assert "alex20-base" in listed.stdout and "installed" in listed.stdout
    out = tmp_path / "samples.json"
    sampled = _cli(["sample", "--checkpoint", str(target.parent), "--spacegroup", "225", "--num", "2",
                    "--seed", "0", "--out", str(out)], {**env, "OMP_NUM_THREADS": "1"})
    assert sampled.returncode == 0, sampled.stderr
    assert "sampled 2/2" in sampled.stdout + sampled.stderr


def test_checkpoint_picker_lists_the_download(online, tmp_path):
    from app.checkpoints import find_checkpoints
    from core.download import download

    result = download("alex20-base", progress=lambda done, total: None)
    refs = {ref.name: ref for ref in find_checkpoints()}
    assert refs["alex20-base"].path == str(result.path.parent)


def test_resume_after_cut_connection(online, pkl_bytes):
    from core.download import download

    path = resolve_path(*BASE)
    online.cut_once.add(path)
    online.cut_fraction = 0.8          # past huggingface_hub's first 10 MiB chunk of the 19.4 MB file
    cut = int(len(pkl_bytes) * 0.8)
    seen: list[tuple[int, int | None]] = []
    result = download("alex20-base", progress=lambda done, total: seen.append((done, total)))
    assert result.path.read_bytes() == pkl_bytes
    ranges = online.gets(path)
    assert ranges[0] is None and ranges[1] is not None and len(ranges) == 2
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= cut                                                   # continued, not restarted
    assert online.sent[path] == len(pkl_bytes) + (cut - start)                # only the unwritten tail again
    assert seen[-1] == (len(pkl_bytes), len(pkl_bytes))


def test_corrupted_file_is_refused_and_not_installed(online):
    from core.download import catalogue_item, download

    online.corrupt.add(resolve_path(*BASE))
    with pytest.raises(MissingResourceError, match=r"corrupted download refused.*hub's ETag.*URL: http://127\.0\.0\.1"):
        download("alex20-base")
    item = catalogue_item("alex20-base")
    assert not item.destination().exists()
    assert not list(item.destination().parent.glob(".download-*"))   # nothing left to resume from
    online.corrupt.clear()
    assert download("alex20-base").path.is_file()                     # a clean retry then succeeds


def test_plain_http_resume_and_pinned_hash(online, tmp_path):
    """A non-hub file (the Alexandria hull's kind of source) resumes with Range and honours a pinned sha256."""
    import hashlib

    from core.download import catalogue_item, download

    data = os.urandom(300_000)
    online.files["/data/pbe/hull.json.bz2"] = data
    online.cut_once.add("/data/pbe/hull.json.bz2")
    item = dataclasses.replace(catalogue_item("alexandria-hull"), url=f"{online.url}/data/pbe/hull.json.bz2",
                               sha256=hashlib.sha256(data).hexdigest())
    result = download(item)
    assert result.path.read_bytes() == data and result.path.parent == tmp_path / "data" / "alexandria"
    assert online.gets("/data/pbe/hull.json.bz2")[1] == f"bytes={len(data) // 2}-"
    assert "CC BY 4.0" in item.card_path().read_text()
    wrong = dataclasses.replace(item, sha256="0" * 64)
    with pytest.raises(MissingResourceError, match="corrupted download refused"):
        download(wrong, force=True)
    assert not item.destination().exists() or item.destination().read_bytes() == data


def test_offline_gives_one_line_with_url_and_manual_placement(tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "CFRL_CHECKPOINTS_DIR": str(tmp_path / "checkpoints")}
    done = _cli(["download", "alex20-rl-ehull"], env, timeout=300)
    assert done.returncode == 3
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: download of alex20-rl-ehull failed")
    assert "http://127.0.0.1:9/zdcao/CrystalFormer/resolve/main/alex20/RL-ehull/epoch_000195.pkl" in lines[0]
    assert f"save it as {tmp_path / 'checkpoints' / 'alex20-rl-ehull' / 'epoch_000195.pkl'}" in lines[0]


def test_paper_memory_from_the_parameter_count():
    from core.download import paper_memory

    config = json.loads((PAPER / "config.json").read_text()) if (PAPER / "config.json").is_file() else None
    if config is None:
        pytest.skip("paper fixture config not found")
    memory = paper_memory()
    assert memory["parameters"] == config["param_count"] == 4_833_575
    assert memory["weights"] == 4 * 4_833_575
    # one crystal's float32 key/value cache: 2 (k, v) × 16 layers × 105 attended tokens (5·n_max, fixture
    # README) × 16 heads × 64 × 4 B
    assert memory["cache_per_crystal"] == 2 * 16 * 105 * 16 * 64 * 4
    assert memory["weights"] < memory["sampling"] < memory["training"]
    assert np.isclose(memory["training"] - memory["sampling"], 3 * memory["weights"])
