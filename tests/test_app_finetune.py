"""The Fine-tune page beyond a first run (``tests/test_app_pages.py`` has that): continuing a run through
``core.ppo.PPOTrainer``'s resume with the starting model kept as the KL base, choosing the result in the
sidebar, refusing a taken name, and leaving no checkpoint behind when the reward fails at once.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from app import finetune
from core.errors import ScoringError
from test_app_pages import button, env, finish, start, texts  # noqa: F401 - env is a fixture


def size_reward(mlip, hull):
    """r = −0.01 × atoms per cell (−5 for a sample that could not be built): fast and deterministic."""
    return lambda structures: np.array([-0.01 * len(s) if s is not None else -5.0 for s in structures])


def launch(at, name: str, steps: int = 2):
    """Start a run of ``steps`` PPO steps on batches of 2 crystals, saved as ``name``."""
    for key, value in (("ft-steps", steps), ("ft-batch", 2)):
        at.number_input(key=key).set_value(value)
    at.text_input(key="ft-name").input(name)
    return button(at, "Start fine-tuning").click().run()


def first_run(at, name: str = "tiny-ppo"):
    return finish(launch(at, name), "finetune")


@pytest.fixture
def ppo_env(env, monkeypatch):
    monkeypatch.setitem(finetune.REWARD_FACTORIES, "ehull", size_reward)
    return env


def test_continue_resumes_the_run_against_the_original_base_and_the_result_is_selectable(ppo_env):
    at = first_run(start("finetune"))
    out = finetune.output_dir("tiny-ppo")
    assert json.loads((out / "ppo_state.json").read_text())["step"] == 2
    table = at.dataframe[0].value
    assert list(table["Step"]) == [1, 2] and {"Mean reward", "KL to base (nats, sample estimate)", "Buildable"} <= set(table.columns)

    button(at, "Use it in the sidebar").click().run()
    assert at.sidebar.selectbox(key="sidebar-ckpt-choice").value == "tiny-ppo (fine-tuned)"
    assert at.session_state["checkpoint_ref"].path == str(out)

    at.number_input(key="ft-more").set_value(1)
    button(at, "Continue training").click().run()
    finish(at, "finetune")
    job = at.session_state["jobs"]["finetune"]
    assert job.error is None and [log["step"] for log in job.items] == [3]       # resumed, not restarted
    # the KL is measured against the starting model: after two updates it is no longer zero (it would be
    # exactly zero at every step's start if the continued run had taken its own start as the base)
    assert job.items[0]["kl"] != 0.0
    assert list(at.dataframe[0].value["Step"]) == [1, 2, 3]
    assert json.loads((out / "ppo_state.json").read_text())["step"] == 3
    assert json.loads((out / "meta.json").read_text())["ppo_steps"] == 3
    assert "after 3 PPO steps" in texts(at.success)
    at.switch_page("../pages/generate.py").run()
    at.switch_page("../pages/finetune.py").run()                             # widget values are dropped on a switch,
    assert (at.number_input(key="ft-steps").value, at.number_input(key="ft-batch").value) == (1, 2)   # settings are not
    assert list(at.dataframe[0].value["Step"]) == [1, 2, 3]


def test_a_taken_name_is_refused_and_a_failed_start_leaves_no_checkpoint(ppo_env, monkeypatch):
    at = first_run(start("finetune"), "mine")
    button(at, "Start fine-tuning").click().run()
    assert "'mine' already exists" in texts(at.warning)
    assert [log["step"] for log in at.session_state["jobs"]["finetune"].items] == [1, 2]   # the old run is kept

    def broken(mlip, hull):
        def reward(structures):
            raise ScoringError("the potential is not installed")
        return reward

    monkeypatch.setitem(finetune.REWARD_FACTORIES, "ehull", broken)
    at.text_input(key="ft-name").input("broken")
    button(at, "Start fine-tuning").click().run()
    finish(at, "finetune")
    assert "the potential is not installed" in texts(at.error)
    assert not finetune.output_dir("broken").exists()
    options = at.sidebar.selectbox(key="sidebar-ckpt-choice").options
    assert "mine (fine-tuned)" in options and not any(o.startswith("broken") for o in options)


def test_stop_ends_after_the_current_step_and_saves_what_was_learned(ppo_env, monkeypatch):
    def slow_reward(mlip, hull):
        fast = size_reward(mlip, hull)

        def reward(structures):
            time.sleep(0.4)
            return fast(structures)
        return reward

    monkeypatch.setitem(finetune.REWARD_FACTORIES, "ehull", slow_reward)
    at = launch(start("finetune"), "stopped", steps=20)
    job = at.session_state["jobs"]["finetune"]
    while len(job.items) < 1:
        time.sleep(0.05)
    at.button(key="ft-job-stop").click().run()
    assert job.wait(60) and job.state == "stopped"
    done = len(job.items)
    assert 1 <= done < 20
    state = json.loads((finetune.output_dir("stopped") / "ppo_state.json").read_text())
    assert state["step"] == done and len(state["history"]) == done          # saved when stopped, every step kept
    at.run()
    assert f"after {done} PPO steps" in texts(at.success)
