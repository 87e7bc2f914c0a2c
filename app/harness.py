"""Run the real app and drive it from Chromium: shared by ``tests/test_browser.py`` and ``bench/app_latency.py``.

``AppServer`` starts ``streamlit run app/main.py`` headless on a free port with its own environment
(checkpoints folder, app data folder) and arguments (``--scorer``/``--reward`` stand-ins, read by
``use_stand_ins``) and stops it; ``browser()`` opens Debian's
Chromium through Playwright (never a downloaded browser); the ``Page`` helpers click through the
sidebar navigation and wait for Streamlit to finish a script run.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from app.paths import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_missing() -> str | None:
    """Why a real-browser run is impossible here (None when it is possible)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Debian chromium is not installed (apt-get install -y chromium; `make browser` does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -r requirements.txt)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_function(spec: str, default: str) -> Callable:
    """The function named by ``package.module:function`` or ``path/to/file.py:function`` (``default``
    when the name after ':' is left out)."""
    module, _, name = spec.rpartition(":") if spec.count(":") else (spec, "", default)
    if module.endswith(".py"):
        loader = importlib.util.spec_from_file_location(f"cfrl_stand_in_{abs(hash(module))}", module)
        mod = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    return getattr(mod, name or default)


def use_stand_ins(argv: Sequence[str]) -> None:
    """Plug in the fast stand-ins a test or bench server was started with (``app/main.py``'s arguments):
    ``--scorer SPEC`` (a function with ``score_iter``'s signature, set as ``app.scoring.SCORER``) and
    ``--reward SPEC`` (a factory ``(mlip, hull) -> reward`` used for every Fine-tune reward). Without
    arguments nothing changes; a user's ``streamlit run app/main.py`` has none."""
    parser = argparse.ArgumentParser(prog="app/main.py", add_help=False)
    parser.add_argument("--scorer", default=None)
    parser.add_argument("--reward", default=None)
    args, _ = parser.parse_known_args(list(argv))
    if args.scorer:
        from app import scoring

        if scoring.SCORER is None:
            scoring.SCORER = load_function(args.scorer, "score_iter")
    if args.reward:
        from app import finetune

        factory = load_function(args.reward, "reward_factory")
        for key in finetune.REWARD_FACTORIES:
            finetune.REWARD_FACTORIES[key] = factory


class AppServer:
    """``streamlit run app/main.py [args]`` in a subprocess; ``url`` once ``start()`` returned."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None, args: Sequence[str] = ()):
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", **env}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def streamlit_args(self) -> list[str]:
        """The arguments after ``streamlit``: run app/main.py on this port, headless, no file watcher."""
        return ["run", str(REPO_ROOT / "app" / "main.py"), "--server.headless", "true", "--server.port", str(self.port),
                "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none", *(["--", *self.args] if self.args else [])]

    def command(self) -> list[str]:
        """The server's command line (a subclass may wrap Streamlit, e.g. to time its script runs)."""
        return [sys.executable, "-m", "streamlit", *self.streamlit_args()]

    def start(self, timeout_s: float = 120.0) -> "AppServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the app did not answer on {self.url} within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def browser():
    """A headless Debian Chromium (Playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# ---------------------------------------------------------------------------------------------
# page helpers
# ---------------------------------------------------------------------------------------------
def wait_idle(page, timeout_s: float = 120.0, settle_s: float = 0.3) -> None:
    """Wait until Streamlit has finished the current script run (its 'Running…' widget is gone)."""
    deadline = time.time() + timeout_s
    time.sleep(settle_s)
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        if not running:
            time.sleep(settle_s)
            if not page.locator('[data-testid="stStatusWidget"]').count():
                return
        time.sleep(0.1)
    raise TimeoutError("the app kept running for more than %.0f s" % timeout_s)


def _click_page(page, title: str, timeout_s: float) -> None:
    """Click a page in the sidebar navigation and wait for its title."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=timeout_s * 1000)


def open_page(page, title: str, timeout_s: float = 60.0) -> None:
    """Click a page in the sidebar navigation, wait for its title and the end of its script run."""
    _click_page(page, title, timeout_s)
    wait_idle(page)


class RunWatcher:
    """Times Streamlit script runs as the browser sees them, for benchmarks.

    Listens to the page's websocket and notes the moment each full script run's ``script_finished``
    message arrives (fragment reruns are not counted). ``open_page`` then times a page switch from the
    click to that message plus the next painted frame, with no settle wait of its own.
    """

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page = page
        self.finished: list[float] = []
        full_runs = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}

        def on_frame(payload) -> None:
            if not isinstance(payload, bytes):
                return
            message = ForwardMsg()
            try:
                message.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - not a ForwardMsg
                return
            if message.WhichOneof("type") == "script_finished" and message.script_finished in full_runs:
                self.finished.append(time.perf_counter())

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))

    def open_page(self, title: str, timeout_s: float = 60.0) -> float:
        """Click a page in the sidebar; seconds until its title is shown, its run has finished and a frame
        has been painted after both."""
        seen = len(self.finished)
        start = time.perf_counter()
        _click_page(self.page, title, timeout_s)
        self.wait_finished(seen, start + timeout_s, title)
        self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        return time.perf_counter() - start

    def wait_finished(self, seen: int, deadline: float, what: str) -> float:
        """Wait for a full script run to finish after the first ``seen``; the ``perf_counter`` moment it did."""
        while len(self.finished) <= seen:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{what}: no finished script run in time")
            self.page.wait_for_timeout(10)   # lets Playwright deliver websocket events
        return self.finished[seen]


def screenshot(page, path, height: int | None = None) -> None:
    """A viewport screenshot from the top of the page, optionally with a taller viewport (pixels)."""
    size = page.viewport_size
    if height:
        page.set_viewport_size({"width": size["width"], "height": height})
    page.locator('[data-testid="stMain"]').evaluate("e => e.scrollTo(0, 0)")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), timeout=90_000)
    if height:
        page.set_viewport_size(size)


def plotly_traces(page, chart_index: int = 0) -> list[dict]:
    """Name, point count and customdata of each trace of the n-th plotly chart on the page."""
    return page.evaluate(
        """(k) => { const gd = document.querySelectorAll('.js-plotly-plot')[k];
                    return gd._fullData.map(t => ({name: t.name, n: (t.x || []).length,
                                                   customdata: t.customdata ? Array.from(t.customdata, r => Array.from(r, v => (typeof v === 'number' && !isFinite(v)) ? null : v)) : null})); }""",
        chart_index)


def click_plot_point(page, trace_name: str, point: int = 0, chart_index: int = 0) -> dict:
    """Click one marker of a named trace of a plotly chart (at its pixel position); returns the trace's info."""
    page.locator(".js-plotly-plot").nth(chart_index).wait_for()
    traces = plotly_traces(page, chart_index)
    info = next(t for t in traces if t["name"] == trace_name)
    chart = page.locator(".js-plotly-plot").nth(chart_index)
    chart.scroll_into_view_if_needed()
    xy = page.evaluate(
        """([k, name, i]) => { const gd = document.querySelectorAll('.js-plotly-plot')[k];
             const t = gd._fullData.find(t => t.name === name);
             const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
             return [box.left + xa._offset + xa.d2p(t.x[i]), box.top + ya._offset + ya.d2p(t.y[i])]; }""",
        [chart_index, trace_name, point])
    page.mouse.click(xy[0], xy[1])
    return info


def fake_reward(mlip: str, hull: str):
    """A fast stand-in for the Fine-tune page's rewards (``AppServer(..., args=["--reward", "app.harness:fake_reward"])``):
    r = −0.01 × atoms per cell, −5 for a sample that could not be built, with the E_hull log fields."""
    import numpy as np

    def reward(structures):
        r = np.array([-0.01 * len(s) if s is not None else -5.0 for s in structures])
        return r, {"e_hull_mean": float(-r[r > -5].mean()) if (r > -5).any() else float("nan")}

    return reward


def canvas_colours(png: bytes) -> int:
    """Number of distinct colours in a screenshot (1 = a blank canvas)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))


def viewer_canvas(page, timeout_s: float = 60.0, min_colours: int = 21):
    """The WebGL canvas of the 3Dmol viewer (inside its ``st.iframe``), once it shows a drawn structure.

    Waits on locators, which are resolved again on every try: a Streamlit rerun may replace the iframe
    (and its frame) while we wait, so holding on to one frame object can wait forever on a detached one.
    "Drawn" means at least ``min_colours`` distinct colours in the canvas (a blank one has a single
    colour), so no fixed sleep is needed for 3Dmol to finish painting.
    """
    deadline = time.time() + timeout_s
    frames = page.locator('iframe[data-testid="stIFrame"]')
    while time.time() < deadline:
        for k in range(frames.count()):
            with contextlib.suppress(Exception):   # an iframe replaced by a rerun: look again
                canvas = frames.nth(k).content_frame.locator("canvas").first
                if not canvas.count():
                    continue
                canvas.scroll_into_view_if_needed(timeout=2000)
                if canvas.bounding_box() and canvas_colours(canvas.screenshot(timeout=5000)) >= min_colours:
                    return canvas
        time.sleep(0.25)
    raise TimeoutError(f"no drawn 3D viewer canvas within {timeout_s:.0f} s")


def open_options(page, widget) -> list[str]:
    """Open the option list of a Streamlit selectbox or multiselect and return its options' texts. A click
    focuses the combobox; whether it also opens the list differs between widgets, so the arrow key a
    keyboard user would press opens it when the click did not."""
    box = widget.get_by_role("combobox")

    def opened(within_s: float = 2.0) -> bool:       # React opens the list a frame or more after the event
        try:
            return poll(lambda: box.get_attribute("aria-expanded") == "true", "", within_s, interval_s=0.1)
        except StepMissed:
            return False

    box.click()
    for key in ("ArrowDown", "Alt+ArrowDown"):
        if opened():
            break
        box.press(key)
    listbox = page.locator(f'[id="{box.get_attribute("aria-controls")}"]') if box.get_attribute("aria-controls") \
        else page.get_by_role("listbox")
    try:
        listbox.get_by_role("option").first.wait_for(timeout=30_000)
    except Exception as error:
        raise AssertionError(f"the option list did not open: combobox {box.evaluate('e => e.outerHTML')[:600]}; "
                             f"{page.get_by_role('option').count()} options on the page") from error
    return listbox.get_by_role("option").all_inner_texts()


def wait_for_change(read: Callable[[], object], before: object, timeout_s: float = 60.0) -> object:
    """Poll ``read()`` until it differs from ``before`` (a rerun has painted its result); return the new value.
    Raises StepMissed (an AssertionError) naming the unchanged value when it never changes."""
    changed = poll(lambda: (now := read()) != before and [now], f"still {before!r} after {timeout_s:.0f} s",
                   timeout_s, interval_s=0.2)
    return changed[0]


def choose(page, widget, *options: str) -> None:
    """Pick ``options`` in a Streamlit selectbox or multiselect (``widget``: its ``stSelectbox`` /
    ``stMultiSelect`` element) as a user does: open the list, click each option, close it."""
    for option in options:
        open_options(page, widget)
        page.get_by_role("option", name=option, exact=True).click()
        wait_idle(page)
    page.keyboard.press("Escape")   # a multiselect keeps its list open after a click
    wait_idle(page)


def set_number(page, label: str, value: float) -> None:
    """Type ``value`` into the number input labelled ``label`` and leave it (Streamlit commits on blur)."""
    field = page.get_by_role("spinbutton", name=label, exact=True)
    field.fill(str(value))
    field.blur()


def caption(page, containing: str) -> str:
    """The text of the first caption on the page that contains ``containing`` (waits for it)."""
    box = page.locator('[data-testid="stCaptionContainer"]').filter(has_text=containing).first
    box.wait_for()
    return box.inner_text()


def download(page, button_name: str) -> bytes:
    """Click the download button ``button_name`` and return the file it sends (the page must accept downloads)."""
    with page.expect_download() as started:
        page.get_by_role("button", name=button_name, exact=True).click()
    return Path(started.value.path()).read_bytes()


def plot_ids(page, *traces: str, chart_index: int = 0) -> set[int]:
    """Pool ids (``customdata[0]``) of the points of the named traces of a plotly chart."""
    return {int(float(row[0])) for t in plotly_traces(page, chart_index) if t["name"] in traces
            for row in (t["customdata"] or [])}


# ---------------------------------------------------------------------------------------------
# polling and the data editor (glide-data-grid: a canvas, read through its accessibility table)
# ---------------------------------------------------------------------------------------------
#: how long one driven UI step (a selection, a cell editor opening) may take before it counts as missed;
#: generous because at load average ~20 a Chromium can stall for seconds
STEP_TIMEOUT_S = 30.0
GRID = '[data-testid="stDataFrame"]'


class StepMissed(AssertionError):
    """A driven step did not happen in time (a click or key that did not land, a list that did not open)."""


def poll(check: Callable[[], object], what: str, timeout_s: float = STEP_TIMEOUT_S, interval_s: float = 0.05):
    """``check()`` until it is truthy (returns it); StepMissed(what) after ``timeout_s``."""
    deadline = time.perf_counter() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise StepMissed(what)
        time.sleep(interval_s)


#: the data editor's accessibility table (glide-data-grid keeps one inside its canvas, in step with what is
#: drawn): column headers by absolute index, the selected cells, how many cells are drawn and the text of a few
_GRID_STATE = """([grid, cells]) => {
  const table = document.querySelector(grid + ' table[role="grid"]');
  if (!table) return null;
  const heads = {};
  table.querySelectorAll('th[role="columnheader"]').forEach(h => { heads[h.textContent.trim()] = +h.getAttribute('aria-colindex') - 1; });
  const selected = Array.from(table.querySelectorAll('td[aria-selected="true"]')).map(c => c.id);
  const drawn = table.querySelectorAll('td[role="gridcell"]').length;
  const text = {};
  for (const id of cells) { const c = table.querySelector('#' + CSS.escape(id)); text[id] = c ? c.textContent : null; }
  return {heads, selected, text, cells: drawn};
}"""


def grid_state(page, cells: Sequence[str] = ()) -> dict | None:
    """The first data editor's headers ({name: column index}), selected cell ids, number of drawn cells and
    the text of ``cells`` (ids like ``glide-cell-<column>-<row>``); None before it is mounted."""
    return page.evaluate(_GRID_STATE, [GRID, list(cells)])


def open_cell_editor(page, row: int, column: str, column_index: int, check: tuple[str, str] | None = None):
    """Select the ``column`` cell of the data editor's ``row`` by keyboard, press Enter and wait for glide's
    overlay cell editor; returns its textarea. The grid is a canvas: every step is checked against its
    accessibility table, so a click or key that did not land is caught here (StepMissed), not typed into
    nowhere. ``column_index``: the column's index when its header is not drawn (scrolled away); ``check``:
    (column name, text) the row must show, e.g. ("#", "12"), so an edit never lands on another entry."""
    wait_idle(page)
    # ready: the table is mounted and some of its cells are drawn
    state = poll(lambda: (s := grid_state(page)) and s["cells"] and s, "the data editor grid did not become ready")
    index = state["heads"].get(column, column_index)
    grid = page.locator(GRID).first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    # a cell of the first drawn row; which one depends on how the grid is scrolled, so read it back. The grid
    # may still show an earlier selection (e.g. the row Enter moved to after the last edit), and the first
    # click after focus was elsewhere can clear it instead of selecting: click until the selection is a new
    # one, or the same one twice in a row (the click picked the very cell that was selected)
    before = state["selected"]
    picked = None
    for _ in range(3):
        page.mouse.click(box["x"] + 75, box["y"] + 35 + 17)
        try:
            picked = poll(lambda: (now := grid_state(page)["selected"]) and now != before and now, "", 3.0)
            break
        except StepMissed:
            now = grid_state(page)["selected"]
            if now and now == before:
                picked = now
                break
            before = now
    if not picked:
        raise StepMissed("three clicks selected no cell")
    _, _, at_column, at_row = picked[0].split("-")
    down, right = row - int(at_row), index - int(at_column)
    for _ in range(abs(down)):
        page.keyboard.press("ArrowDown" if down > 0 else "ArrowUp")
    for _ in range(abs(right)):
        page.keyboard.press("ArrowRight" if right > 0 else "ArrowLeft")
    target = f"glide-cell-{index}-{row}"
    state = poll(lambda: (s := grid_state(page, [target])) and s["selected"] == [target] and s,
                 f"the keys did not select the {column} cell of row {row}")
    if check is not None:
        cell = f"glide-cell-{state['heads'].get(check[0], 1)}-{row}"
        shown = grid_state(page, [cell])["text"][cell]
        if shown is not None and shown.strip() != check[1]:
            raise StepMissed(f"row {row} shows {check[0]} {shown.strip()}, not {check[1]}")
    page.keyboard.press("Enter")
    editor = page.locator("#portal textarea.gdg-input")
    try:
        editor.wait_for(state="visible", timeout=STEP_TIMEOUT_S * 1000)
    except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError
        raise StepMissed(f"Enter did not open the {column} cell editor") from exc
    if editor.input_value() != (state["text"][target] or ""):
        raise StepMissed(f"the cell editor holds {editor.input_value()!r}, the cell {state['text'][target]!r}")
    return editor
