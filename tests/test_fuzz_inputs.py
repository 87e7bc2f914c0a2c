"""Broken structures (non-finite, empty, huge, degenerate) sent into every public entry point and every CLI
command that reads structures: each refuses with a typed error or its documented refusal value, never a
crash. spglib and moyo are C/Rust: a NaN coordinate used to end the process with a segmentation fault
(exit 139), so the cases run in a child process (this file run as a script) and a signal fails the test
with the last case it started.

One child runs all API cases and one runs all CLI commands (``core.cli.main`` in-process, one call per
command), to keep CI time to seconds rather than a process start per case.
"""
from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
CASE_TIMEOUT_S = 60     # one call; a hang (e.g. a Niggli reduction that never ends) is a failure too

NAN_POSCAR = """NaCl with a NaN coordinate
1.0
4.0 0.0 0.0
0.0 4.0 0.0
0.0 0.0 4.0
Na Cl
1 1
Direct
0.0 0.0 0.0
nan 0.5 0.5
"""
GOOD_POSCAR = NAN_POSCAR.replace("nan 0.5 0.5", "0.5 0.5 0.5").replace("with a NaN coordinate", "")


# ------------------------------------------------------------------------------------------------ the child
def _cases():
    """(name, object) pairs: one usable control, then the broken ones."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    nan, inf = float("nan"), float("inf")

    def nacl(lattice=None, coords=((0, 0, 0), (0.5, 0.5, 0.5))):
        return Structure(lattice if lattice is not None else Lattice.cubic(4.0), ["Na", "Cl"], [list(c) for c in coords])

    cases = [("control: CsCl-type NaCl", nacl())]
    broken = {
        "NaN coordinate": lambda: nacl(coords=((0, 0, 0), (nan, 0.5, 0.5))),
        "inf coordinate": lambda: nacl(coords=((0, 0, 0), (inf, 0.5, 0.5))),
        "1e300 coordinate": lambda: nacl(coords=((0, 0, 0), (1e300, 0.5, 0.5))),
        "NaN lattice": lambda: nacl(Lattice(np.full((3, 3), nan))),
        "inf lattice entry": lambda: nacl(Lattice([[inf, 0, 0], [0, 4, 0], [0, 0, 4]])),
        "empty structure": lambda: Structure(Lattice.cubic(4.0), [], []),
        "zero-volume cell": lambda: nacl(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 0]])),
        "nearly coplanar cell": lambda: nacl(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-4]])),
        "1e6 Å cell": lambda: nacl(Lattice.cubic(1e6)),
        "1e200 Å cell (volume overflows)": lambda: nacl(Lattice.cubic(1e200)),
        "collapsed cell (0.01 Å)": lambda: nacl(Lattice.cubic(0.01)),
        "2,000 sites": lambda: Structure(Lattice.cubic(60.0), ["Na"] * 2000,
                                         np.random.default_rng(0).random((2000, 3))),
        "not a structure (text)": lambda: "NaCl",
        "not a structure (None)": lambda: None,
        "not a structure (dict)": lambda: {"lattice": [[4, 0, 0], [0, 4, 0], [0, 0, 4]]},
    }
    for name, build in broken.items():
        try:
            cases.append((name, build()))
        except Exception as exc:  # noqa: BLE001 - pymatgen itself refused to build it: nothing to send
            cases.append((name, exc))
    return cases


def _entry_points(tmp: Path):
    """(name, call, refusal) per public door; ``refusal(result)`` is True for a documented refusal value
    (a reason string, None) rather than an exception."""
    import zipfile

    from core import export, symmetry, view
    from core.scoring.inputs import input_problem
    from core.shortlist import Shortlist
    from core.structure_check import structure_problem
    from core.tokens import CrystalTokens

    store = Shortlist(tmp / "fuzz.sqlite")
    is_text = lambda r: isinstance(r, str)
    raises = lambda r: False
    listed = lambda r: "errors.txt" in zipfile.ZipFile(io.BytesIO(r)).namelist()   # the batch goes on
    return [
        ("structure_problem", structure_problem, is_text),
        ("symmetry.space_group_number", symmetry.space_group_number, lambda r: r is None),
        ("symmetry.analyzer", lambda s: symmetry.analyzer(s).get_space_group_number(), raises),
        ("CrystalTokens.from_structure", CrystalTokens.from_structure, raises),
        ("Shortlist.add", lambda s: store.add(s, allow_duplicate=True), raises),
        ("Shortlist.find_duplicate", store.find_duplicate, raises),
        ("view.view_html", lambda s: view.view_html(s, script=""), raises),
        ("view.cell_setting", view.cell_setting, raises),
        ("export.cif", export.cif, raises),
        ("export.cif_zip", lambda s: export.cif_zip([s]), listed),
        ("export.check_structure", export.check_structure, is_text),
        ("scoring.input_problem", input_problem, is_text),
        ("app detail.symmetry_table", lambda s: __import__("app.detail").detail.symmetry_table(s), raises),
    ]


def _on_alarm(signum, frame):
    raise TimeoutError(f"no answer within {CASE_TIMEOUT_S} s")


def run_api_cases() -> None:
    """Print one JSON line per (entry point, case): outcome "ok" (control passed), "refused" (typed error
    or refusal value), or "unclean" with the exception. "start" lines come first so a crash names its case."""
    from core.errors import CrystalFormerError

    signal.signal(signal.SIGALRM, _on_alarm)
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases()
        for door, call, refusal in _entry_points(Path(tmp)):
            for name, obj in cases:
                print(json.dumps({"start": [door, name]}), flush=True)
                control = name.startswith("control")
                signal.alarm(CASE_TIMEOUT_S)
                try:
                    result = call(obj)
                    outcome = ("ok" if not refusal(result) else "refused-control") if control else (
                        "refused" if refusal(result) else f"accepted: {type(result).__name__}")
                except CrystalFormerError as exc:
                    outcome = f"refused-control: {exc}" if control else "refused"
                except Exception as exc:  # noqa: BLE001 - what the test reports
                    outcome = f"unclean: {type(exc).__name__}: {exc}"
                finally:
                    signal.alarm(0)
                print(json.dumps({"door": door, "case": name, "outcome": outcome}), flush=True)


def run_cli_cases(tmp: str) -> None:
    """Every command that reads structures, on the NaN-coordinate POSCAR: (command, exit code, stderr)."""
    from core.cli import main
    from core.settings import fixtures_dir

    folder = Path(tmp)
    bad, good = folder / "nan.vasp", folder / "good.vasp"
    bad.write_text(NAN_POSCAR)
    good.write_text(GOOD_POSCAR)
    tiny = fixtures_dir() / "crystalformer" / "tiny"
    checkpoint = ["--checkpoint", str(tiny / "perturbed"), "--config", str(tiny / "config.json")]
    commands = {
        "logp": ["logp", *checkpoint, str(bad)],
        "score": ["score", str(bad), "--hull", "none", "--no-properties", "--quiet"],
        "score --training-set": ["score", str(good), "--training-set", str(bad), "--hull", "none",
                                 "--no-properties", "--quiet"],
        "trust": ["trust", str(bad), "--out", str(folder / "trust")],
        "train --data": ["train", "--data", str(bad), "--out", str(folder / "train"), "--epochs", "1",
                         "--config", str(tiny / "config.json")],
        "screen --novelty": ["screen", *checkpoint, "--novelty", str(bad), "--num", "2", "--batch-size", "2",
                             "--no-ray", "--no-properties", "--hull", "none", "--quiet", "--out", str(folder / "screen")],
    }
    signal.signal(signal.SIGALRM, _on_alarm)
    for name, argv in commands.items():
        print(json.dumps({"start": [name]}), flush=True)
        err = io.StringIO()
        signal.alarm(CASE_TIMEOUT_S * 3)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except BaseException as exc:  # noqa: BLE001 - a traceback escaping main is what the test reports
            code = f"raised {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        print(json.dumps({"command": name, "code": code, "stderr": err.getvalue()}), flush=True)


# ------------------------------------------------------------------------------------------------ the tests
def _child(*args: str, timeout: float) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1",
                                                "PYTHONPATH": str(REPO)})
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line["start"] for line in lines if "start" in line]
    assert proc.returncode == 0, (f"child died with {proc.returncode} (signal {-proc.returncode} if < 0) "
                                  f"during {started[-1] if started else 'start-up'}:\n{proc.stderr[-3000:]}")
    return [line for line in lines if "start" not in line]


def test_every_entry_point_refuses_broken_structures_cleanly():
    results = _child("api", timeout=600)
    assert len({r["door"] for r in results}) >= 12 and len({r["case"] for r in results}) >= 16
    bad = [f"{r['door']} <- {r['case']}: {r['outcome']}" for r in results
           if r["outcome"] != ("ok" if r["case"].startswith("control") else "refused")]
    assert not bad, "\n".join(bad)


def test_nan_poscar_gives_one_error_line_from_every_cli_command(tmp_path):
    results = _child("cli", str(tmp_path), timeout=900)
    assert {r["command"] for r in results} >= {"logp", "score", "trust", "train --data", "screen --novelty"}
    for r in results:
        lines = [line for line in r["stderr"].splitlines() if line.startswith("error:")]
        assert r["code"] == 2 and len(lines) == 1 and "Traceback" not in r["stderr"], r
        assert "nan.vasp" in lines[0] or "not finite" in lines[0], r


if __name__ == "__main__":
    if sys.argv[1] == "api":
        run_api_cases()
    else:
        run_cli_cases(sys.argv[2])
