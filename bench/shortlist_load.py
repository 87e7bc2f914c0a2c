"""Shortlist under load: N browser sessions on ONE app server, a shortlist of many entries.

    .venv/bin/python bench/shortlist_load.py [--sessions 10] [--entries 500] [--actions 8] [--out bench/shortlist_load.md]

Seeds ``--entries`` entries straight through ``core.shortlist.Shortlist`` in a temporary app data folder
(``CFRL_APP_DATA_DIR``), starts ``streamlit run app/main.py`` the way the tests do (``app.harness.AppServer``,
the closed-form fake scorer of tests/app_support.py, a tiny checkpoint: no heavy model loads) and drives
headless Debian Chromium with Playwright. Each session first uploads its own crystals on the Score page and
scores them (untimed set-up), then repeats, ``--actions`` times, one of:

* **add**: on Explore, pick one of its crystals and press *Add to shortlist*;
* **edit**: on Shortlist, type a new note into its own entry's Notes cell, then *Save notes & tags*;
* **zip** / **csv**: click the *CIF zip* / *CSV* download and wait for the file.

Page time is measured from the action (click, or the note's Enter) to Streamlit's ``script_finished``
message for the run it caused (full or fragment run) plus a painted frame; for downloads, to the file
received. The phase runs with 1 session, then with ``--sessions`` at once, on the same server and database.

Afterwards every note a session saved is looked up in the database: it must be stored as that session last
saved it, or have been reported on screen as a conflict. Errors are exception boxes on the page
(``stException``) and tracebacks in the server log. Results go to ``--out`` (markdown).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from app import harness  # noqa: E402

VIEWPORT = {"width": 1500, "height": 1000}
METALS = ("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Y", "Zr", "Nb", "Mo", "Ru", "Rh", "Pd", "Ag",
          "Cd", "Hf", "Ta", "W")
ANIONS = ("N", "P", "As", "O", "S", "Se", "Te")
TARGET_RATIO = 3.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seed(path: Path, n: int) -> None:
    """``n`` entries (rock-salt-like cells of alkali/alkaline-earth halides and chalcogenides)."""
    from pymatgen.core import Lattice, Structure

    from core.shortlist import Shortlist

    store = Shortlist(path)
    cations, anions = ("Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba"), ("F", "Cl", "Br", "I", "O", "S")
    for i in range(n):
        a, b = cations[i % len(cations)], anions[(i // len(cations)) % len(anions)]
        s = Structure(Lattice.cubic(3.5 + 0.01 * i), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        store.add(s, properties={"fom_ev": 1.0 + i / 100, "band_gap_ev": 2.0, "eps_elec": 3.0,
                                 "e_above_hull": 0.01 * (i % 10)},
                  source="seed", notes=f"seed note {i + 1}", tags=["seed"], allow_duplicate=True)


def session_crystals(session: int, count: int) -> list[tuple[str, str]]:
    """(formula, CIF text) of ``count`` crystals no other session uploads (distinct compositions)."""
    from pymatgen.core import Lattice, Structure

    out = []
    for k in range(count):
        j = session * count + k
        metal, anion = METALS[j % len(METALS)], ANIONS[(j // len(METALS)) % len(ANIONS)]
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.6 + 0.01 * j), [metal, anion],
                                      [[0, 0, 0], [0.5, 0.5, 0.5]])
        out.append((s.composition.reduced_formula, s.to(fmt="cif")))
    return out


class Watcher:
    """Counts Streamlit's ``script_finished`` messages (every kind) seen by one page."""

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page = page
        self.finished = 0

        def on_frame(payload) -> None:
            if not isinstance(payload, bytes):
                return
            message = ForwardMsg()
            try:
                message.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - not a ForwardMsg
                return
            if message.WhichOneof("type") == "script_finished":
                self.finished += 1

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))

    def wait(self, seen: int, timeout_s: float = 90.0) -> None:
        """Until a run finished after the first ``seen`` and a frame was painted."""
        deadline = time.perf_counter() + timeout_s
        while self.finished <= seen:
            if time.perf_counter() > deadline:
                raise TimeoutError("no finished script run in time")
            self.page.wait_for_timeout(10)
        self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


@dataclass
class Result:
    """What one session measured and saw."""

    session: int
    times: dict[str, list[float]] = field(default_factory=dict)
    saved: dict[int, str] = field(default_factory=dict)        # entry id -> note last saved
    conflicts: list[str] = field(default_factory=list)          # conflicts reported on screen
    errors: list[str] = field(default_factory=list)
    driver: list[str] = field(default_factory=list)              # the bench's own failures (timeouts, missed keys)
    added: int = 0

    def note(self, kind: str, seconds: float) -> None:
        self.times.setdefault(kind, []).append(seconds)


def page_errors(page) -> list[str]:
    boxes = page.locator('[data-testid="stException"]')
    return [boxes.nth(i).inner_text()[:300] for i in range(boxes.count())]


def timed(page, watcher: Watcher, act) -> float:
    seen = watcher.finished
    start = time.perf_counter()
    act()
    watcher.wait(seen)
    return time.perf_counter() - start


def notes_steps(db: Path) -> int:
    """Columns from the editor's Select column to its Notes column now (entries added through Explore bring
    their feasibility column along)."""
    from app.shortlisting import editable_frame
    from core.shortlist import Shortlist

    columns = list(editable_frame(Shortlist(db, read_only=True).list()).columns)
    return columns.index("notes") - columns.index("select")


def edit_note(page, watcher: Watcher, row: int, text: str, steps: int) -> float:
    """Type ``text`` into the Notes cell of the editor's ``row`` (keyboard: the grid is a canvas), ``steps``
    columns right of the Select column."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 75, box["y"] + 35 + 35 * row + 17)      # that row's Select cell, beside the box
    for _ in range(steps):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    return timed(page, watcher, lambda: page.keyboard.press("Enter"))




def run_session(server_url: str, db: Path, chromium, session: int, actions: int, result: Result, start_gate: "_SetupGate",
                lock: threading.Lock) -> None:
    """Set up one session (upload, score) and run its actions."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with lock:
        context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
    page.set_default_timeout(300_000)
    watcher = Watcher(page)
    n_adds = max(1, actions // 4 + 1)
    crystals = session_crystals(session, n_adds)
    try:
        page.goto(server_url)
        page.get_by_role("heading", name="Generate", exact=True).wait_for()
        harness.wait_idle(page)
        harness.open_page(page, "Score")
        page.get_by_text("Add your own structures").click()
        folder = Path(tempfile.mkdtemp(prefix=f"load-s{session}-"))
        files = []
        for k, (formula, text) in enumerate(crystals):
            files.append(folder / f"s{session}_{k}_{formula}.cif")
            files[-1].write_text(text)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
        page.get_by_text(re.compile(rf"s{session}_{len(crystals) - 1}_.*structure\(s\) added")).wait_for()
        harness.wait_idle(page)
        page.get_by_role("button", name=re.compile(r"Score \d+ structure")).click()
        page.get_by_text(re.compile(r"Progress: scoring \d+/\d+ · .* \(finished\)")).wait_for()
        harness.wait_idle(page)
        start_gate.wait()
        my_entry, adds = session + 1, 0
        for k in range(actions):
            kind = ("edit", "add", "zip", "csv")[k % 4]
            if kind == "add" and adds >= len(crystals):
                kind = "edit"
            if kind == "add":
                harness.open_page(page, "Explore")
                formula = crystals[adds][0]
                picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Structure").locator("input")
                picker.click()
                page.keyboard.type(f" {formula} ")
                page.keyboard.press("Enter")
                harness.wait_idle(page)
                page.get_by_role("heading", name=re.compile(rf"^{formula} · #")).wait_for()
                result.note("add", timed(page, watcher,
                                         lambda: page.get_by_role("button", name="Add to shortlist").click()))
                page.get_by_text(re.compile(r"to the shortlist as #\d+|Already kept")).wait_for()
                adds += 1
                result.added += 1
            else:
                if page.get_by_role("heading", name="Shortlist", exact=True).count() == 0:
                    result.note("open", timed(page, watcher, lambda: harness._click_page(page, "Shortlist", 300)))
                if kind == "edit":
                    text = f"session {session} edit {k}"
                    result.note("edit", edit_note(page, watcher, my_entry - 1, text, notes_steps(db)))
                    save = page.get_by_role("button", name=re.compile(r"Save notes & tags \([1-9]\d*\)"))
                    if not save.count():   # the keystrokes missed the cell: a driver problem, not the app's
                        result.driver.append(f"session {session} action {k}: the note edit did not register")
                        continue
                    result.note("save", timed(page, watcher, save.click))
                    page.wait_for_timeout(300)
                    warnings = page.locator('[data-testid="stAlert"]').filter(has_text="another session")
                    if warnings.count():
                        result.conflicts.append(warnings.first.inner_text()[:200])
                    else:
                        result.saved[my_entry] = text
                else:
                    label = "CIF zip" if kind == "zip" else "CSV"
                    button = page.get_by_role("button", name=re.compile(rf"^.*{label} \("))
                    start = time.perf_counter()
                    with page.expect_download() as download:
                        button.click()
                    download.value.path()
                    result.note(kind, time.perf_counter() - start)
            result.errors += page_errors(page)
            log(f"session {session}: {kind} done ({k + 1}/{actions})")
    except (PlaywrightTimeout, TimeoutError) as exc:
        result.driver.append(f"session {session}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        if not start_gate.passed:   # failed in set-up: still count as ready, so the others start
            start_gate.wait()
        with lock:
            context.close()


def phase(server_url: str, db: Path, sessions: int, actions: int, first: int) -> list[Result]:
    """``sessions`` sessions at once (threads, one Playwright each); their results."""
    results = [Result(first + i) for i in range(sessions)]
    gate = threading.Event()
    lock = threading.Lock()
    ready = threading.Barrier(sessions + 1, timeout=1800)

    def worker(r: Result) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=harness.CHROMIUM, args=harness.CHROMIUM_ARGS)
            try:
                run_session(server_url, db, b, r.session, actions, r, _SetupGate(gate, ready), lock)
            finally:
                b.close()

    threads = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in threads:
        t.start()
    ready.wait()
    log(f"{sessions} session(s) set up; actions start")
    gate.set()
    for t in threads:
        t.join()
    return results


class _SetupGate:
    """The event a session waits on after its set-up: it tells the barrier it is ready, then waits."""

    def __init__(self, gate: threading.Event, ready: threading.Barrier) -> None:
        self.gate, self.ready, self.passed = gate, ready, False

    def wait(self) -> None:
        self.passed = True
        self.ready.wait()
        self.gate.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(results: list[Result]) -> dict[str, tuple[int, float, float]]:
    """{kind: (n, p50, p95)} over all sessions, and 'all'."""
    by_kind: dict[str, list[float]] = {}
    for r in results:
        for kind, values in r.times.items():
            by_kind.setdefault(kind, []).extend(values)
    by_kind["all"] = [v for k, vs in by_kind.items() for v in vs]
    return {k: (len(v), percentile(v, 0.5), percentile(v, 0.95)) for k, v in by_kind.items()}


def lost_edits(db: Path, results: list[Result]) -> list[str]:
    """Notes a session saved that the database does not hold as it last saved them."""
    from core.shortlist import Shortlist

    store = Shortlist(db, read_only=True)
    lost = []
    for r in results:
        for entry_id, text in r.saved.items():
            now = store.get(entry_id).notes
            if now != text:
                lost.append(f"session {r.session} #{entry_id}: saved {text!r}, stored {now!r}")
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--actions", type=int, default=8, help="actions per session and phase")
    parser.add_argument("--out", default=str(REPO / "bench" / "shortlist_load.md"))
    args = parser.parse_args()
    why = harness.chromium_missing()
    if why:
        sys.exit(f"error: {why}")
    from app_support import make_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="shortlist-load-"))
    data = tmp / "data"
    db = data / "shortlist.sqlite"
    t0 = time.perf_counter()
    seed(db, args.entries)
    log(f"seeded {args.entries} entries in {time.perf_counter() - t0:.1f} s ({db})")
    make_checkpoint(tmp / "checkpoints", "base")
    env = {"CFRL_APP_DATA_DIR": str(data), "CFRL_CHECKPOINTS_DIR": str(tmp / "checkpoints")}
    server_log = tmp / "server.log"
    load_before = os.getloadavg()
    with harness.AppServer(env, server_log, args=["--scorer", f"{REPO / 'tests' / 'app_support.py'}:fake_score_iter"]) as server:
        log(f"server up at {server.url}; warm-up: one CIF zip of all entries (fills the server's CIF cache)")
        t0 = time.perf_counter()
        warm = phase_warm(server.url)
        log(f"warm-up export took {warm:.1f} s")
        started = time.perf_counter()
        one = phase(server.url, db, 1, args.actions, first=0)
        log(f"1 session: {summary(one)['all']}")
        many = phase(server.url, db, args.sessions, args.actions, first=1)
        log(f"{args.sessions} sessions: {summary(many)['all']}")
        elapsed = time.perf_counter() - started
    server_errors = [line.strip() for line in server_log.read_text(errors="replace").splitlines()
                     if "Traceback" in line or re.search(r"\bError\b", line)]
    results = one + many
    lost = lost_edits(db, results)
    write_report(Path(args.out), args, one, many, lost, server_errors, warm, elapsed, load_before)
    log(f"wrote {args.out}")


def phase_warm(url: str) -> float:
    """One untimed session downloads the CIF zip of every entry (the first export writes each CIF)."""
    with harness.browser() as chromium:
        page = chromium.new_page(viewport=VIEWPORT, accept_downloads=True)
        page.set_default_timeout(900_000)
        page.goto(url)
        page.get_by_role("heading", name="Generate", exact=True).wait_for()
        harness.open_page(page, "Shortlist")
        start = time.perf_counter()
        with page.expect_download() as download:
            page.get_by_role("button", name=re.compile(r"CIF zip \(")).click()
        download.value.path()
        return time.perf_counter() - start


def write_report(out: Path, args, one: list[Result], many: list[Result], lost: list[str], server_errors: list[str],
                 warm: float, elapsed: float, load_before) -> None:
    s1, sn = summary(one), summary(many)
    ratio = sn["all"][2] / s1["all"][2] if s1["all"][2] else float("nan")
    page_errors_ = [e for r in one + many for e in r.errors]
    conflicts = sum(len(r.conflicts) for r in one + many)
    rows = "\n".join(
        f"| {kind} | {s1.get(kind, (0,))[0]} | {_fmt(s1.get(kind))} | {sn.get(kind, (0,))[0]} | {_fmt(sn.get(kind))} |"
        for kind in ("open", "add", "edit", "save", "zip", "csv", "all"))
    met = "met" if ratio <= TARGET_RATIO else "NOT met"
    text = f"""# Shortlist under load: {args.sessions} browser sessions on one server

Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/shortlist_load.py --sessions {args.sessions} --entries {args.entries} --actions {args.actions}`
on {platform.node()} ({os.cpu_count()} CPU cores, shared with other work: load average {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}
when the run started, {os.getloadavg()[0]:.2f} when it ended). One `streamlit run app/main.py` (fake scorer, tiny
checkpoint), a shortlist seeded with {args.entries} entries, headless Debian Chromium via Playwright; the 1-session and
the {args.sessions}-session phases ran in the same run on the same server ({elapsed:.0f} s for both).

Page time: from the action to Streamlit's `script_finished` for the run it caused plus a painted frame (downloads:
to the file received). Warm-up before timing: one CIF zip of all {args.entries} entries took {warm:.1f} s (each entry's
CIF is written once per server and then served from its cache).

| action | n (1 session) | p50 / p95 s (1 session) | n ({args.sessions} sessions) | p50 / p95 s ({args.sessions} sessions) |
|---|---|---|---|---|
{rows}

* **p95 ratio ({args.sessions} / 1 sessions): {ratio:.2f}** (target ≤ {TARGET_RATIO:g}: **{met}**)
* lost edits: **{len(lost)}** (every note a session saved checked in the database afterwards; {conflicts} save(s) reported
  as conflicts on screen){''.join(f'{chr(10)}  * {x}' for x in lost)}
* errors: **{len(page_errors_)}** on the pages, **{len(server_errors)}** lines with a traceback or error in the server
  log{''.join(f'{chr(10)}  * {x}' for x in (page_errors_ + server_errors)[:10])}
* driver problems (the bench's own timeouts or missed keystrokes, not app errors): {sum(len(r.driver) for r in one + many)}{''.join(f'{chr(10)}  * {x}' for r in one + many for x in r.driver[:5])}
* entries added through Explore: {sum(r.added for r in one + many)}
"""
    out.write_text(text)
    print(text)


def _fmt(stats) -> str:
    return "–" if not stats or not stats[0] else f"{stats[1]:.2f} / {stats[2]:.2f}"


if __name__ == "__main__":
    main()
