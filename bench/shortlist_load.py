"""Shortlist under load: N browser sessions on ONE app server, a shortlist of many entries.

    .venv/bin/python bench/shortlist_load.py [--sessions 10] [--entries 500] [--actions 8] [--baseline-sessions 3]
                                            [--think 1-3] [--seed 0] [--out bench/shortlist_load.md]

Seeds ``--entries`` entries straight through ``core.shortlist.Shortlist`` in a temporary app data folder
(``CFRL_APP_DATA_DIR``), starts ``streamlit run app/main.py`` with the closed-form fake scorer of
tests/app_support.py and a tiny checkpoint (no heavy model loads), and drives headless Debian Chromium with
Playwright. Each session first uploads its own crystals on the Score page and scores them (untimed set-up),
waits at a start gate until every session of its phase is set up, then does ``--actions`` actions in the
fixed cycle edit, add, zip, csv:

* **edit**: on Shortlist, type a new note into its own entry's Notes cell and press Enter, which saves it;
* **add**: on Explore, pick one of its crystals and press *Add to shortlist*;
* **zip** / **csv**: click the *CIF zip* / *CSV* download (all entries) and wait for the file;
* **open**: switching to the Shortlist page when an action needs it (after an add).

Between two actions a session pauses for a human think time, drawn uniformly from ``--think`` seconds
(seeded by ``--seed`` and the session number; ``--think 0`` for none): people sharing one app do not click
the instant the last page finished. The baseline phase runs ``--baseline-sessions`` sessions one after the
other (never two at once); the load phase runs ``--sessions`` at once. Every session, in either phase, runs
the same script, so both phases have the same actions in the same mix.

Page time runs from the action (click, or the note's Enter) to Streamlit's final ``script_finished`` for
the run it caused (a run stopped early for ``st.rerun`` does not end it) plus a painted frame; for downloads,
to the file received. Server time is measured inside the server process: the wall time of every script run
(``ScriptRunner._run_script``) and deferred download (``MediaFileManager.execute_deferred``) of that session
that started during the action, logged by hooks this script installs when it starts the server
(``--serve``); both processes read the same monotonic clock. Page time minus server time is what the
browser, the websocket and the client side of the machine added.

Afterwards every note a session saved is looked up in the database: it must be stored as that session last
saved it, or have been reported on screen as a conflict. Errors are exception boxes on the page
(``stException``) and tracebacks in the server log. Driver problems (the bench's own missed clicks or
timeouts) are counted apart from app errors. Results go to ``--out`` (markdown).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from app import harness  # noqa: E402

VIEWPORT = {"width": 1500, "height": 1000}
METALS = ("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Y", "Zr", "Nb", "Mo", "Ru", "Rh", "Pd", "Ag",
          "Cd", "Hf", "Ta", "W")
ANIONS = ("N", "P", "As", "O", "S", "Se", "Te")
TARGET_RATIO = 3.0
CYCLE = ("edit", "add", "zip", "csv")
KINDS = ("open", "add", "edit", "zip", "csv")
STEP_TIMEOUT_S = harness.STEP_TIMEOUT_S


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# the server, with timing hooks
# ---------------------------------------------------------------------------------------------
def install_server_hooks(run_log: Path) -> None:
    """Log, in this (server) process, the monotonic start and end of every script run and deferred download
    with its session id, one JSON object a line: the server side of each page time."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    out = open(run_log, "a", buffering=1)
    lock = threading.Lock()

    def write(kind: str, session: str | None, start: float, cpu: float, triggers: list[str] | None = None) -> None:
        record = {"kind": kind, "session": session, "start": start, "end": time.monotonic(), "cpu": cpu}
        if triggers:
            record["triggers"] = triggers
        with lock:
            out.write(json.dumps(record) + "\n")

    run_script = ScriptRunner._run_script
    execute_deferred = MediaFileManager.execute_deferred

    def timed_run_script(self, rerun_data) -> None:
        # thread_time: the CPU this run's own thread used, so wall minus CPU is time spent waiting for a core
        start, cpu = time.monotonic(), time.thread_time()
        try:
            run_script(self, rerun_data)
        finally:
            states = getattr(rerun_data, "widget_states", None)
            pressed = [w.id for w in (states.widgets if states is not None else ())
                       if w.WhichOneof("value") == "trigger_value" and w.trigger_value]
            write("run", self._session_id, start, time.thread_time() - cpu, pressed)

    def timed_execute_deferred(self, file_id: str) -> str:
        session = (self._deferred_callables.get(file_id) or {}).get("session_id")
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return execute_deferred(self, file_id)
        finally:
            write("download", session, start, time.thread_time() - cpu)

    ScriptRunner._run_script = timed_run_script
    MediaFileManager.execute_deferred = timed_execute_deferred


def serve(run_log: Path, streamlit_args: Sequence[str]) -> None:
    """``streamlit run ...`` in this process, with the timing hooks (the bench's ``--serve`` mode)."""
    from streamlit.web import cli

    install_server_hooks(run_log)
    sys.argv = ["streamlit", *streamlit_args]
    cli.main(prog_name="streamlit")


class TimedAppServer(harness.AppServer):
    """``harness.AppServer``, but the server is this script in ``--serve`` mode, so its runs are timed."""

    def __init__(self, env: dict[str, str], log_path: Path, run_log: Path, args: Sequence[str] = ()):
        super().__init__(env, log_path, args=args)
        self.run_log = run_log

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.run_log), "--", *self.streamlit_args()]


def server_records(run_log: Path) -> list[dict[str, Any]]:
    """The hooks' records so far."""
    if not run_log.exists():
        return []
    return [json.loads(line) for line in run_log.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
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


def parse_think(text: str) -> tuple[float, float]:
    """``"1-3"`` -> (1.0, 3.0); ``"0"`` -> (0.0, 0.0); one number -> that pause every time."""
    lo, _, hi = text.partition("-")
    bounds = (float(lo), float(hi or lo))
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise argparse.ArgumentTypeError(f"--think wants LO-HI seconds with 0 <= LO <= HI, not {text!r}")
    return bounds


# ---------------------------------------------------------------------------------------------
# the browser side
# ---------------------------------------------------------------------------------------------
#: the bench's own miss (a click or keystroke that did not land, a step that timed out), not an app error
DriverProblem = harness.StepMissed


class Watcher:
    """Counts the final ``script_finished`` messages one page receives and notes its Streamlit session id."""

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page = page
        self.finished = 0
        self.session_ids: set[str] = set()
        # a run stopped early for st.rerun() is followed by the run that finishes the action: only count that
        final = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR,
                 ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}

        def on_frame(payload) -> None:
            if not isinstance(payload, bytes):
                return
            message = ForwardMsg()
            try:
                message.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - not a ForwardMsg
                return
            kind = message.WhichOneof("type")
            if kind == "script_finished" and message.script_finished in final:
                self.finished += 1
            elif kind == "new_session" and message.new_session.initialize.session_id:
                self.session_ids.add(message.new_session.initialize.session_id)

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))

    def wait(self, seen: int, timeout_s: float = 180.0) -> None:
        """Until a run finished after the first ``seen`` and a frame was painted."""
        deadline = time.perf_counter() + timeout_s
        while self.finished <= seen:
            if time.perf_counter() > deadline:
                raise TimeoutError("no finished script run in time")
            self.page.wait_for_timeout(10)   # lets Playwright deliver the websocket events
        self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


@dataclass
class Sample:
    """One timed action: its kind, its monotonic start and end, the server time matched to it afterwards."""

    kind: str
    start: float
    end: float
    server: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Result:
    """What one session measured and saw."""

    session: int
    samples: list[Sample] = field(default_factory=list)
    session_ids: set[str] = field(default_factory=set)          # its Streamlit session id(s)
    saved: dict[int, str] = field(default_factory=dict)        # entry id -> note last saved
    conflicts: list[str] = field(default_factory=list)          # conflicts reported on screen
    unapplied: list[str] = field(default_factory=list)          # edits not in the database once their run ended
    dropped: list[str] = field(default_factory=list)            # edits / add presses the app never saw (repeated)
    errors: list[str] = field(default_factory=list)
    driver: list[str] = field(default_factory=list)             # the bench's own misses (timeouts, missed keys)
    added: int = 0
    done: int = 0                                                # actions completed
    retries: int = 0                                             # cell editor openings that needed the retry

    def timed(self, kind: str, page, watcher: Watcher, act: Callable[[], None], timeout_s: float = 180.0) -> None:
        """Do ``act`` and note, as a ``kind`` sample, the time until the run it caused has finished."""
        seen = watcher.finished
        start = time.monotonic()
        act()
        watcher.wait(seen, timeout_s)
        self.samples.append(Sample(kind, start, time.monotonic()))


def page_errors(page) -> list[str]:
    boxes = page.locator('[data-testid="stException"]')
    return [boxes.nth(i).inner_text()[:300] for i in range(boxes.count())]


def edit_note(page, watcher: Watcher, result: Result, row: int, entry_id: int, text: str, notes_column: int) -> None:
    """Type ``text`` as the note of ``entry_id`` (shown in ``row``) and commit it with Enter (timed "edit").

    Opening the cell editor is retried once; the typed text is checked in the editor before Enter. An Enter
    after which the browser sends nothing (no script run within ``STEP_TIMEOUT_S``: the data editor dropped
    the edit in the page, the cell shows its old text again) is noted in ``result.dropped`` and the edit typed
    once more, as a user who sees the old text come back would."""
    for attempt in range(2):
        used_fill = _type_note(page, result, row, entry_id, text, notes_column)
        try:
            result.timed("edit", page, watcher, lambda: page.keyboard.press("Enter"), timeout_s=STEP_TIMEOUT_S)
            return
        except TimeoutError:
            column = ((harness.grid_state(page) or {}).get("heads") or {}).get("Notes", notes_column)
            cell = f"glide-cell-{column}-{row}"
            shown = (harness.grid_state(page, [cell]) or {}).get("text", {}).get(cell)
            result.dropped.append(f"#{entry_id} {text!r} (attempt {attempt + 1}; typed{' + fill' if used_fill else ''}; "
                                  f"the cell then showed {shown!r})")
    raise DriverProblem(f"the browser sent neither of two Enters for #{entry_id}")


def _type_note(page, result: Result, row: int, entry_id: int, text: str, notes_column: int) -> bool:
    """Open the Notes cell editor of ``row`` and type ``text`` into it; True when the keys had to be
    completed with ``fill`` (keystrokes lost under load)."""
    try:
        editor = harness.open_cell_editor(page, row, "Notes", notes_column, ("#", str(entry_id)))
    except DriverProblem:
        result.retries += 1
        page.keyboard.press("Escape")      # close a half-open editor or drop the selection, then start again
        page.wait_for_timeout(500)
        editor = harness.open_cell_editor(page, row, "Notes", notes_column, ("#", str(entry_id)))
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    used_fill = editor.input_value() != text
    if used_fill:
        editor.fill(text)                  # keystrokes lost under load: set the value as a paste would
    if editor.input_value() != text:
        page.keyboard.press("Escape")
        raise DriverProblem(f"the cell editor holds {editor.input_value()!r}, not the typed {text!r}")
    return used_fill


def run_session(server_url: str, db: Path, chromium, session: int, actions: int, think: tuple[float, float],
                seed_: int, result: Result, start_gate: "_SetupGate", lock: threading.Lock) -> None:
    """Set up one session (upload, score), wait at the start gate, run its actions with think time."""
    from playwright.sync_api import Error as PlaywrightError

    with lock:
        context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
    page.set_default_timeout(300_000)
    watcher = Watcher(page)
    rng = random.Random(f"{seed_}-{session}")
    n_adds = max(1, actions // 4 + 1)
    crystals = session_crystals(session, n_adds)
    my_entry = session + 1
    row = entry_row(db, my_entry)
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
        adds = 0
        for k in range(actions):
            if k:   # a person reads the page before the next click
                page.wait_for_timeout(rng.uniform(*think) * 1000)
            kind = CYCLE[k % len(CYCLE)]
            if kind == "add" and adds >= len(crystals):
                kind = "edit"
            try:
                if kind == "add":
                    do_add(page, watcher, result, db, session, crystals[adds][0])
                    adds += 1
                else:
                    if page.get_by_role("heading", name="Shortlist", exact=True).count() == 0:
                        result.timed("open", page, watcher, lambda: harness._click_page(page, "Shortlist", 300))
                    if kind == "edit":
                        text = f"session {session} edit {k}"
                        do_edit(page, watcher, result, db, row, my_entry, text)
                    else:
                        do_download(page, result, kind)
            except DriverProblem as exc:
                result.driver.append(f"session {session} action {k + 1} ({kind}): {exc}")
                continue
            result.done += 1
            result.errors += page_errors(page)
            log(f"session {session}: {kind} done ({k + 1}/{actions})")
    except (PlaywrightError, TimeoutError) as exc:   # Playwright's TimeoutError is one of its Errors
        # e.g. "Download.path: canceled": a download the browser dropped; the session stops, the rest go on
        result.driver.append(f"session {session}: {type(exc).__name__}: {str(exc)[:200]}")
        with contextlib.suppress(Exception):      # what the page showed when the session stopped
            shot = db.parent.parent / f"session-{session}-stopped.png"
            page.screenshot(path=str(shot), full_page=True)
            result.driver[-1] += f" (page: {shot}; grid: {harness.grid_state(page)})"
    finally:
        result.session_ids = set(watcher.session_ids)
        if not start_gate.passed:   # failed in set-up: still count as ready, so the others start
            start_gate.wait()
        with lock:
            context.close()


def do_add(page, watcher: Watcher, result: Result, db: Path, session: int, formula: str) -> None:
    """Explore: pick ``formula`` and press *Add to shortlist* (timed "add"). No confirmation within
    ``STEP_TIMEOUT_S`` after the run the click caused is noted in ``result.dropped``, with whether the
    database holds the entry (the press reached the app, its message did not show) or not (the press was
    lost), and the button pressed once more, as a user who sees nothing happen would."""
    harness.open_page(page, "Explore")
    picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Structure").locator("input")
    picker.click()
    page.keyboard.type(f" {formula} ")
    page.keyboard.press("Enter")
    harness.wait_idle(page)
    page.get_by_role("heading", name=re.compile(rf"^{formula} · #")).wait_for()
    confirmed = page.get_by_text(re.compile(r"to the shortlist as #\d+|Already kept"))
    for attempt in range(2):
        result.timed("add", page, watcher, lambda: page.get_by_role("button", name="Add to shortlist").click())
        try:
            confirmed.wait_for(timeout=STEP_TIMEOUT_S * 1000)
            result.added += 1
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError
            stored = "stored" if added_from(db, session, formula) else "NOT stored"
            result.dropped.append(f"add {formula} (attempt {attempt + 1}): no confirmation within {STEP_TIMEOUT_S:g} s "
                                  f"after the click's run; the entry is {stored}; clicked again")
    raise DriverProblem(f"neither of two Add to shortlist clicks for {formula} reached the server")


def do_edit(page, watcher: Watcher, result: Result, db: Path, row: int, entry_id: int, text: str) -> bool:
    """Shortlist: edit the note of ``entry_id`` and commit it with Enter (timed "edit"), which saves it (the
    editor's ``on_change``). True when saved without a conflict (the note the database must then hold)."""
    edit_note(page, watcher, result, row, entry_id, text, notes_index(db))
    warnings = page.locator('[data-testid="stAlert"]').filter(has_text="another session")
    if warnings.count():
        result.conflicts.append(warnings.first.inner_text()[:200])
        return False
    result.saved[entry_id] = text
    stored = stored_note(db, entry_id)
    if stored != text:     # the edit's run finished but the note is not in the database: say what the page showed
        alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
        result.unapplied.append(f"#{entry_id} (Enter at {result.samples[-1].start:.2f}): stored {stored!r}; "
                                f"messages on the page: {[a[:160] for a in alerts]}")
    return True


def added_from(db: Path, session: int, formula: str) -> bool:
    """Whether the shortlist holds ``formula`` uploaded by ``session`` (its file name is the entry's source)."""
    from core.shortlist import Shortlist

    listing = Shortlist(db, read_only=True).list()
    return bool(((listing["formula"] == formula) & listing["source"].str.startswith(f"s{session}_")).any())


def stored_note(db: Path, entry_id: int) -> str | None:
    from core.shortlist import Shortlist

    entry = Shortlist(db, read_only=True).get(entry_id)
    return entry.notes


def do_download(page, result: Result, kind: str) -> None:
    """Shortlist: click the CIF zip or CSV download (all entries) and wait for the file (timed ``kind``)."""
    label = "CIF zip" if kind == "zip" else "CSV"
    button = page.get_by_role("button", name=re.compile(rf"^.*{label} \("))
    start = time.monotonic()
    with page.expect_download() as download:
        button.click()
    download.value.path()
    result.samples.append(Sample(kind, start, time.monotonic()))


def notes_index(db: Path) -> int:
    """The Notes column's index in the editor, from the stored list (a fallback: the page's own header is
    used when it is drawn, since entries added meanwhile can bring a column the page does not show yet)."""
    from app.shortlisting import editable_frame
    from core.shortlist import Shortlist

    return list(editable_frame(Shortlist(db, read_only=True).list()).columns).index("notes")


def entry_row(db: Path, entry_id: int) -> int:
    """The editor row that shows ``entry_id``: the list is in id order and later entries are appended."""
    from core.shortlist import Shortlist

    ids = [int(i) for i in Shortlist(db, read_only=True).list()["id"]]
    return ids.index(entry_id)


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------
@dataclass
class Phase:
    """One phase's sessions and what the machine did meanwhile."""

    results: list[Result]
    wall_s: float
    server_cpu_s: float      # CPU the server process used
    machine_cpu_s: float     # CPU every process on the machine used
    load: tuple[float, float]  # 1-minute load average before, after


def phase(server: TimedAppServer, db: Path, sessions: int, actions: int, first: int, think: tuple[float, float],
          seed_: int) -> Phase:
    """``sessions`` sessions at once (threads, one Playwright each); their results and the CPU spent."""
    import psutil

    results = [Result(first + i) for i in range(sessions)]
    gate = threading.Event()
    lock = threading.Lock()
    ready = threading.Barrier(sessions + 1, timeout=1800)

    def worker(r: Result) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=harness.CHROMIUM, args=harness.CHROMIUM_ARGS)
            try:
                run_session(server.url, db, b, r.session, actions, think, seed_, r, _SetupGate(gate, ready), lock)
            finally:
                b.close()

    threads = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in threads:
        t.start()
    ready.wait()
    log(f"{sessions} session(s) set up; actions start")
    server_proc = psutil.Process(server.process.pid)
    load0, cpu0, srv0, t0 = os.getloadavg()[0], _busy(psutil.cpu_times()), _cpu(server_proc), time.monotonic()
    gate.set()
    for t in threads:
        t.join()
    return Phase(results, time.monotonic() - t0, _cpu(server_proc) - srv0, _busy(psutil.cpu_times()) - cpu0,
                 (load0, os.getloadavg()[0]))


def _cpu(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _busy(times) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class _SetupGate:
    """The event a session waits on after its set-up: it tells the barrier it is ready, then waits."""

    def __init__(self, gate: threading.Event, ready: threading.Barrier) -> None:
        self.gate, self.ready, self.passed = gate, ready, False

    def wait(self) -> None:
        self.passed = True
        self.ready.wait()
        self.gate.wait()


def attach_server_times(results: list[Result], records: list[dict[str, Any]]) -> None:
    """Give each sample the server time of its session's runs and downloads that started during it."""
    by_session: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_session.setdefault(record["session"], []).append(record)
    for r in results:
        mine = [rec for sid in r.session_ids for rec in by_session.get(sid, [])]
        for s in r.samples:
            # 50 ms of slack: the server may pick the request up a hair before the driver's clock read returns
            s.server = sum(rec["end"] - rec["start"] for rec in mine if s.start - 0.05 <= rec["start"] <= s.end)


# ---------------------------------------------------------------------------------------------
# statistics and report
# ---------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(results: list[Result], server: bool = False) -> dict[str, tuple[int, float, float]]:
    """{kind: (n, p50, p95)} of page time (or server time) over all sessions, and 'all'."""
    by_kind: dict[str, list[float]] = {}
    for r in results:
        for s in r.samples:
            value = s.server if server else s.seconds
            if value is not None:
                by_kind.setdefault(s.kind, []).append(value)
    by_kind["all"] = [v for vs in by_kind.values() for v in vs]
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


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:          # the server process TimedAppServer starts
        serve(Path(argv[1]), argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions at once in the load phase")
    parser.add_argument("--entries", type=int, default=500, help="shortlist entries seeded before the run")
    parser.add_argument("--actions", type=int, default=8, help="actions per session")
    parser.add_argument("--baseline-sessions", type=int, default=3,
                        help="sessions run one after the other in the 1-session phase (more samples, same mix)")
    parser.add_argument("--think", type=parse_think, default=(1.0, 3.0), metavar="LO-HI",
                        help="human think time between a session's actions, uniform in LO..HI seconds; 0 for none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the think times")
    parser.add_argument("--out", default=str(REPO / "bench" / "shortlist_load.md"))
    args = parser.parse_args(argv)
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
    server_log, run_log = tmp / "server.log", tmp / "runs.jsonl"
    load_before = os.getloadavg()
    scorer = ["--scorer", f"{REPO / 'tests' / 'app_support.py'}:fake_score_iter"]
    with TimedAppServer(env, server_log, run_log, args=scorer) as server:
        log(f"server up at {server.url}; warm-up: one CIF zip of all entries (fills the server's CIF cache)")
        warm = phase_warm(server.url)
        log(f"warm-up export took {warm:.1f} s")
        started = time.perf_counter()
        one = [phase(server, db, 1, args.actions, i, args.think, args.seed) for i in range(args.baseline_sessions)]
        log(f"1 session: {summary([r for p in one for r in p.results])['all']}")
        many = phase(server, db, args.sessions, args.actions, args.baseline_sessions, args.think, args.seed)
        log(f"{args.sessions} sessions: {summary(many.results)['all']}")
        elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    server_errors = [line.strip() for line in server_log.read_text(errors="replace").splitlines()
                     if "Traceback" in line or re.search(r"\bError\b", line)]
    records = server_records(run_log)
    results = [r for p in one for r in p.results] + many.results
    attach_server_times(results, records)
    lost = lost_edits(db, results)
    write_report(Path(args.out), args, one, many, lost, server_errors, warm, elapsed, load_before, load_after)
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


def write_report(out: Path, args, one: list[Phase], many: Phase, lost: list[str], server_errors: list[str],
                 warm: float, elapsed: float, load_before: tuple[float, float, float],
                 load_after: tuple[float, float, float]) -> None:
    """The markdown report (and the same text on stdout)."""
    base = [r for p in one for r in p.results]
    s1, sn = summary(base), summary(many.results)
    v1, vn = summary(base, server=True), summary(many.results, server=True)
    ratio = sn["all"][2] / s1["all"][2] if s1["all"][2] else float("nan")
    server_ratio = vn["all"][2] / v1["all"][2] if v1["all"][2] else float("nan")
    everyone = base + many.results
    page_errors_ = [e for r in everyone for e in r.errors]
    driver = [x for r in everyone for x in r.driver]
    conflicts = sum(len(r.conflicts) for r in everyone)
    complete = all(r.done == args.actions for r in everyone)
    valid = complete and not driver
    rows = "\n".join(
        f"| {kind} | {s1.get(kind, (0,))[0]} | {_fmt(s1.get(kind))} | {_fmt(v1.get(kind))} "
        f"| {sn.get(kind, (0,))[0]} | {_fmt(sn.get(kind))} | {_fmt(vn.get(kind))} |"
        for kind in (*KINDS, "all"))
    if not valid:
        verdict = "**not judged: the run is invalid** (not every session completed every action; see driver problems)"
    else:
        verdict = f"target ≤ {TARGET_RATIO:g}: **{'met' if ratio <= TARGET_RATIO else 'NOT met'}**"
    cores = os.cpu_count() or 1
    cpu_rows = "\n".join(
        f"| {name} | {p.wall_s:.0f} | {p.wall_s * cores:.0f} | {p.machine_cpu_s:.0f} | {p.server_cpu_s:.0f} "
        f"| {p.machine_cpu_s - p.server_cpu_s:.0f} | {p.load[0]:.1f} → {p.load[1]:.1f} |"
        for name, p in [*((f"1 session (run {i + 1})", p) for i, p in enumerate(one)), (f"{args.sessions} sessions", many)])
    think = ("none" if args.think[1] == 0 else
             f"uniform {args.think[0]:g}–{args.think[1]:g} s, seeded (`--seed {args.seed}` and the session number)")
    text = f"""# Shortlist under load: {args.sessions} browser sessions on one server

Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/shortlist_load.py --sessions {args.sessions} --entries {args.entries} --actions {args.actions} --baseline-sessions {args.baseline_sessions} --think {args.think[0]:g}-{args.think[1]:g} --seed {args.seed}`
on {platform.node()} ({cores} CPU cores, shared with other work). Load average (1 / 5 / 15 min) when the run started
{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, when it ended {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}.
One `streamlit run app/main.py` (fake scorer, tiny checkpoint), a shortlist seeded with {args.entries} entries, headless
Debian Chromium via Playwright. Both phases ran on the same server and database ({elapsed:.0f} s for both): first
{args.baseline_sessions} session(s) one after the other (never two at once), then {args.sessions} sessions at once, released
together by a start gate after every one of them was set up. Each session does {args.actions} actions in the cycle edit (saved on Enter),
add, zip, csv, opening the Shortlist page when it comes back from Explore; all sessions run the same script, so both phases
have the same actions in the same mix. Human think time between a session's actions: {think}.

**Page time**: from the action (click, or the note's Enter) to Streamlit's final `script_finished` for the run it caused
plus a painted frame (downloads: to the file received). **Server time**: the wall time, measured inside the server process,
of that session's script runs and deferred downloads that started during the action. Warm-up before timing: one CIF zip
of all {args.entries} entries took {warm:.1f} s (each entry's CIF is written once per server, then served from its cache).

| action | n (1 session) | page p50 / p95 s | server p50 / p95 s | n ({args.sessions} sessions) | page p50 / p95 s | server p50 / p95 s |
|---|---|---|---|---|---|---|
{rows}

* **page-time p95 ratio ({args.sessions} / 1 sessions, all actions): {ratio:.2f}** — {verdict}
* server-time p95 ratio: {server_ratio:.2f}
* actions completed: {sum(r.done for r in base)} / {len(base) * args.actions} (1 session), {sum(r.done for r in many.results)} / {len(many.results) * args.actions} ({args.sessions} sessions);
  cell-editor openings that needed the retry: {sum(r.retries for r in everyone)}
* lost edits: **{len(lost)}** (every note a session saved checked in the database afterwards; {conflicts} save(s) reported
  as conflicts on screen){''.join(f'{chr(10)}  * {x}' for x in lost)}
* edits not in the database once the run their Enter caused had finished: **{sum(len(r.unapplied) for r in everyone)}**{''.join(f'{chr(10)}  * session {r.session} {x}' for r in everyone for x in r.unapplied)}
* actions repeated once because nothing seemed to happen, as a user would repeat them: an edit whose
  Enter the browser never sent (no script run within {STEP_TIMEOUT_S:g} s, the cell shows its old text again), or an *Add to
  shortlist* press with no confirmation within {STEP_TIMEOUT_S:g} s (each says whether the entry was stored): **{sum(len(r.dropped) for r in everyone)}**{''.join(f'{chr(10)}  * session {r.session} {x}' for r in everyone for x in r.dropped)}
* errors: **{len(page_errors_)}** on the pages, **{len(server_errors)}** lines with a traceback or error in the server
  log{''.join(f'{chr(10)}  * {x}' for x in (page_errors_ + server_errors)[:10])}
* driver problems (the bench's own missed clicks, keys or timeouts, not app errors): **{len(driver)}**{''.join(f'{chr(10)}  * {x}' for x in driver[:12])}
* entries added through Explore: {sum(r.added for r in everyone)}

Where the CPU went while the actions ran (CPU-seconds; "clients and the rest" is every other process on the machine:
the Chromiums, the Playwright driver, and whatever else was running). In real use each user's browser runs on their own
machine; here all {args.sessions} Chromiums share the {cores} cores with the server, so page time under load includes
waiting for a core that the clients took.

| phase | wall s | capacity (wall × {cores} cores) | machine busy | server process | clients and the rest | 1-min load |
|---|---|---|---|---|---|---|
{cpu_rows}
"""
    out.write_text(text)
    print(text)


def _fmt(stats) -> str:
    return "–" if not stats or not stats[0] else f"{stats[1]:.2f} / {stats[2]:.2f}"


if __name__ == "__main__":
    main()
