"""Large screens: sample many crystals and score them, distributed on Ray, resumable, readable while running.

    from core.screen import ScreenSpec, run_screen, load_screen
    result = run_screen(ScreenSpec("checkpoints/base", spacegroups="1-230", num=100_000), "screens/big", workers=8)
    frame = load_screen("screens/big")        # finished rows so far, with pymatgen Structures

The screen is a fixed list of batches (``spec.plan``); each finished batch is stored atomically as one
Parquet file (``store``), so a crash, Ctrl-C or lost worker loses at most the batches in flight and a
rerun of the same command does only the missing ones. Batches run on Ray actors that load the model
and the scorers once (``executors.RayExecutor``) or, without Ray, in this process with the same code
(``executors.LocalExecutor``). Command line: ``python -m core screen`` (``core.commands.screen_cli``).
"""
from __future__ import annotations

from core.screen.results import format_summary, load_screen, structure_from_json, summarize_screen
from core.screen.run import ScreenResult, make_executor, run_screen
from core.screen.spec import Batch, ScreenSpec, plan

__all__ = ["Batch", "ScreenResult", "ScreenSpec", "format_summary", "load_screen", "make_executor", "plan",
           "run_screen", "structure_from_json", "summarize_screen"]
