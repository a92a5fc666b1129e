"""RL post-training: verifiable rewards, a GRPO run to a registered checkpoint, the reward-hacking guard
firing on a deliberately hackable reward, resume, and the rlhf/rlaif reward sources."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from core.prompts import ABSTAIN_ANSWER
from trainer.checkpoint import read_lineage
from trainer.evaluate import wilson
from trainer.rewards import (
    PARTIAL_ANSWER,
    answer_reward,
    answer_rewards,
    citation_reward,
    citation_rewards,
    format_reward,
    length_reward,
    length_rewards,
)
from trainer.rl import RLConfig, grpo_args, run_rl
from trainer.rl_guard import check_guard, heldout_eval

PASSAGES = ["Orvan Teel leads Kelvor Dynamics.", "Nikrai has 745,000 people.", "The Teske is a radio."]


# -- rewards: pure functions -------------------------------------------------------------------------


def test_answer_reward_is_the_evals_exact_match() -> None:
    assert answer_reward("Orvan Teel [1]", ["Orvan Teel"]) == 1.0
    assert answer_reward("  orvan teel. ", ["Orvan Teel"]) == 1.0  # case, punctuation, citation folded
    assert answer_reward("Orvan", ["Orvan Teel"]) == 0.0
    assert (
        answer_reward("The chief is Orvan Teel [1].", ["Orvan Teel"]) == PARTIAL_ANSWER
    )  # short, contains it
    assert answer_reward("It is " + "quite " * 12 + "Orvan Teel", ["Orvan Teel"]) == 0.0  # too long to count
    assert answer_reward("Orvan Teelman", ["Orvan Teel"]) == 0.0  # whole words only
    assert answer_reward("745,000 [2]", ["745,000", "745000"]) == 1.0
    assert answer_reward(ABSTAIN_ANSWER, [ABSTAIN_ANSWER]) == 1.0


def test_citation_reward_needs_a_passage_that_contains_the_answer() -> None:
    assert citation_reward("Orvan Teel [1]", ["Orvan Teel"], "grounded", PASSAGES) == 1.0
    assert citation_reward("Orvan Teel [2]", ["Orvan Teel"], "grounded", PASSAGES) == 0.0
    assert citation_reward("Orvan Teel [9]", ["Orvan Teel"], "grounded", PASSAGES) == 0.0  # no such passage
    assert citation_reward("Orvan Teel", ["Orvan Teel"], "grounded", PASSAGES) == 0.0
    assert citation_reward("745,000 [2]", ["745,000"], "grounded", PASSAGES) == 1.0
    assert citation_reward("Teel [1]", ["Teel"], "grounded", ["Orvan Teelman runs it."]) == 0.0  # whole words
    assert citation_reward("x [1]", ["x"], "closed_book", []) is None  # nothing to cite: not scored
    assert citation_reward(ABSTAIN_ANSWER, [ABSTAIN_ANSWER], "abstain", PASSAGES) is None


def test_format_reward_per_kind() -> None:
    assert format_reward("Orvan Teel [1]", "grounded") == 1.0
    assert format_reward("Orvan Teel", "grounded") == 0.0  # no citation
    assert format_reward("Orvan Teel [1] [2]", "grounded") == 0.0
    assert format_reward("It is " + "very " * 20 + "long [1]", "grounded") == 0.0
    assert format_reward("a lawyer", "closed_book") == 1.0
    assert format_reward("a lawyer [1]", "closed_book") == 0.0
    assert format_reward(ABSTAIN_ANSWER, "abstain") == 1.0
    assert format_reward(ABSTAIN_ANSWER + " Sorry.", "abstain") == 0.0


def test_trl_wrappers_read_chat_completions_and_row_columns() -> None:
    completions = [
        [{"role": "assistant", "content": "Orvan Teel [1]"}],
        [{"role": "assistant", "content": "no"}],
    ]
    answers = [["Orvan Teel"], ["Orvan Teel"]]
    assert answer_rewards(completions=completions, answers=answers, prompts=[[], []]) == [1.0, 0.0]
    assert answer_rewards(completions=["Orvan Teel [1]"], answers=[["Orvan Teel"]]) == [1.0]
    cited = citation_rewards(
        completions=completions, answers=answers, kind=["grounded", "closed_book"], passages=[PASSAGES, []]
    )
    assert cited == [1.0, None]
    assert length_rewards(completions=["a b", "a b c d"]) == [length_reward("a b"), 0.1]


def test_wilson_interval() -> None:
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
    assert wilson(0, 20)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


def test_check_guard_needs_reward_up_and_accuracy_down() -> None:
    evals = [{"step": 0, "reward": None, "exact_match": 0.5}, {"step": 5, "reward": 0.3, "exact_match": 0.5}]
    assert check_guard(evals, 0.1) is None
    falling = [*evals, {"step": 10, "reward": 0.6, "exact_match": 0.2}]
    alarm = check_guard(falling, 0.1)
    assert alarm is not None and alarm["best_step"] == 5 and alarm["drop"] == pytest.approx(0.3)
    # accuracy down but the reward down too: a bad run, not reward hacking
    assert check_guard([*evals, {"step": 10, "reward": 0.1, "exact_match": 0.2}], 0.1) is None
    # within the threshold
    assert check_guard([*evals, {"step": 10, "reward": 0.6, "exact_match": 0.45}], 0.1) is None


# -- configuration -----------------------------------------------------------------------------------


def test_config_validates_each_methods_inputs() -> None:
    with pytest.raises(ValueError, match="--reward-model"):
        RLConfig(method="rlhf", from_="x")
    with pytest.raises(ValueError, match="--judge-url"):
        RLConfig(method="rlaif", from_="x", judge_url="http://h/v1")
    with pytest.raises(ValueError, match="at least 2"):
        RLConfig(method="rlvr", from_="x", num_generations=1)


def test_vllm_url_is_trls_server_mode(tmp_path: Path, nano_chat: Path, nano_world: Path) -> None:
    cfg = RLConfig(
        method="rlvr",
        from_="x",
        vllm_url="http://10.0.0.5:8000/",
        beta=0.1,
        num_generations=4,
        prompts_per_step=2,
    )
    args = grpo_args(cfg, tmp_path, cuda=False)
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (
        True,
        "server",
        "http://10.0.0.5:8000",
    )
    assert args.beta == 0.1 and args.per_device_train_batch_size == 8 and args.num_generations == 4
    assert not grpo_args(RLConfig(method="rlvr", from_="x"), tmp_path, cuda=False).use_vllm
    if importlib.util.find_spec("vllm") is not None:
        return
    # vllm is not in this environment: a clear error that names the fix, not a traceback from TRL
    with pytest.raises(ValueError, match="trl vllm-serve"):
        run_rl(RLConfig(method="rlvr", from_=str(nano_chat), data=[nano_world / "rl"], vllm_url="http://h:1"))


def test_heldout_set_from_world_questions_or_rows(nano_world: Path) -> None:
    from trainer.rl_data import heldout_split, read_rl_rows

    rows = read_rl_rows(sorted((nano_world / "rl").glob("*.jsonl")))
    n_grounded = sum(r["kind"] == "grounded" for r in rows)  # 10
    train, items, test = heldout_split(RLConfig(method="rlvr", from_="x", eval_rows=3, test_rows=2), rows)
    assert len(items) == 3 and all(it.citation for it in items)  # grounded rows, with their gold passage
    assert len(test) == 2 and all(it.citation for it in test)
    prompts = [json.dumps(m, sort_keys=True) for m in (*(it.messages for it in (*items, *test)),)]
    assert len(set(prompts)) == 5  # validation and test share no row, and no training row is either
    assert not set(prompts) & {json.dumps(r["prompt"], sort_keys=True) for r in train}
    assert len(train) == len(rows) - 5
    # the test set takes at most a third of the grounded rows, validation at most half of the rest
    _, items, test = heldout_split(RLConfig(method="rlvr", from_="x", eval_rows=100, test_rows=100), rows)
    assert len(test) == n_grounded // 3 and len(items) == (n_grounded - len(test)) // 2
    held = RLConfig(
        method="rlvr",
        from_="x",
        eval_questions=[nano_world / "questions" / "retained.jsonl"],
        eval_docs=[nano_world / "corpus_pre"],
        kinds=["grounded"],
    )
    train, items, _ = heldout_split(held, rows)
    assert items and all("[1] " in it.messages[1]["content"] and it.citation for it in items)
    assert train and all(r["kind"] == "grounded" for r in train)


# -- runs on the nano model --------------------------------------------------------------------------


def _nano_cfg(nano_chat: Path, nano_world: Path, out: Path, **kw: object) -> RLConfig:
    base: dict[str, object] = dict(
        method="rlvr",
        from_=str(nano_chat),
        data=[nano_world / "rl"],
        out=out,
        max_steps=2,
        prompts_per_step=2,
        num_generations=2,
        eval_rows=4,
        eval_every=1,
        max_completion_length=8,
        threads=1,
        lr=1e-3,
    )
    return RLConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_rlvr_run_writes_a_registered_checkpoint_with_lineage_and_report(
    nano_chat: Path, nano_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.__main__ import main

    result = run_rl(_nano_cfg(nano_chat, nano_world, tmp_path / "rl"))
    out = Path(result["out"])
    lineage = read_lineage(out)
    assert lineage["phase"] == "rl" and lineage["parent"] == str(nano_chat) and lineage["method"] == "rlvr"
    assert len(lineage["data_sha256"]) == 64 and lineage["code_version"]
    assert lineage["config"]["beta"] == 0.04 and lineage["rewards"] == {
        "answer": 1.0,
        "citation": 0.5,
        "format": 0.25,
    }
    m = lineage["metrics"]
    assert m["steps"] == 2 and m["heldout_n"] == 3 and m["best_step"] == lineage["kept_step"]
    assert 0.0 <= m["heldout_em_before"] <= 1.0 and "kl_last" in m
    # the test rows (a third of the 10 grounded ones), answered by the SFT model and the kept weights
    assert m["test_n"] == 3 and m["test_diff"] == pytest.approx(m["test_em_kept"] - m["test_em_before"])
    lo, hi = m["test_diff_ci95"]
    assert lo <= m["test_diff"] <= hi
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(set(r["rewards"]) == {"answer", "citation", "format"} and r["kl"] is not None for r in rows)
    assert all(r["completion_length"] > 0 and "heldout_em" in r for r in rows)
    guard = json.loads((out / "guard.json").read_text())
    assert [e["step"] for e in guard["evals"]] == [0, 1, 2]
    report = (out / "report.md").read_text()
    assert (
        "Held-out (validation) exact match" in report
        and "paired bootstrap" in report
        and "Reward-hacking guard" in report
    )
    assert "## Test set (never used to choose the step)" in report
    assert (out / "rl.png").stat().st_size > 10_000
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()
    assert not (out / "trainer").exists() and not (out / "best_state.safetensors").exists()

    capsys.readouterr()
    assert main(["list", "--phase", "rl", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["tag"] == "nano-session-sft-rlvr" and entry["path"] == str(out.resolve())

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out))  # a plain checkpoint the engines load


@pytest.fixture(scope="session")
def nano_abstainer(nano_base: Path, nano_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`nano_base` taught one answer, the abstention sentence, until it says it greedily."""
    from tests.trainer.conftest import kc_home_env
    from trainer.sft import SFTRunConfig, run_sft

    home = tmp_path_factory.mktemp("abstain-home")
    cfg = SFTRunConfig(
        from_=str(nano_base),
        data=[nano_world / "sft" / "abstain.jsonl"],
        out=home / "abstain",
        max_steps=60,
        batch_size=8,
        lr=5e-3,
        eval_fraction=0.0,
        threads=1,
    )
    with kc_home_env(home):
        return Path(run_sft(cfg)["out"])


def test_guard_fires_when_a_hackable_reward_rises_and_heldout_accuracy_falls(
    nano_abstainer: Path, nano_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real run: the policy is rewarded for length, held-out rows are unanswerable (the right answer
    is the short abstention sentence, which it starts out giving). Rambling raises the reward and breaks
    exact match; the guard must say so and keep the early weights."""
    rows = [json.loads(x) for x in (nano_world / "rl" / "abstain.jsonl").read_text().splitlines()]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    cfg = _nano_cfg(
        nano_abstainer,
        nano_world,
        tmp_path / "hacked",
        eval_questions=[heldout],
        max_steps=12,
        eval_every=4,
        num_generations=4,
        prompts_per_step=2,
        max_completion_length=24,
        lr=3e-3,
        beta=0.0,
        guard_threshold=0.2,
    )
    with caplog.at_level(logging.WARNING, logger="trainer.rl"):
        result = run_rl(cfg, reward_funcs=[length_rewards], reward_weights=[1.0])
    lineage = read_lineage(Path(result["out"]))
    m = lineage["metrics"]
    assert m["heldout_em_before"] >= 0.75, "the abstainer should start out right"
    assert m["heldout_em_after"] <= m["heldout_em_before"] - 0.2
    assert m["reward_last"] > m["reward_first"]
    assert result["warnings"] and m["guard_warnings"] == len(result["warnings"])
    assert any("reward hacking" in r.message for r in caplog.records if r.levelno == logging.WARNING)
    w = result["warnings"][0]
    assert w["reward"] > w["reward_at_best"] and w["heldout_em"] < w["best_em"]
    assert lineage["kept_step"] == m["best_step"] < m["steps"]  # the best step, not the last
    assert m["heldout_em_best"] >= m["heldout_em_before"]
    assert "warning(s)" in (Path(result["out"]) / "report.md").read_text()

    # the saved weights are the kept step's: they answer the held-out rows as well as it did
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.rl_data import read_rl_rows, row_item

    saved = AutoModelForCausalLM.from_pretrained(result["out"])
    items = [row_item(r) for r in read_rl_rows([heldout])]
    again = heldout_eval(saved, AutoTokenizer.from_pretrained(result["out"]), items, 8, 24)
    assert again["exact_match"] == m["heldout_em_best"]


# -- rlhf and rlaif: the reward sources of the other methods -----------------------------------------


def test_rlhf_runs_on_a_reward_models_score(nano_chat: Path, nano_world: Path, tmp_path: Path) -> None:
    from trainer.reward_model import RewardModelConfig, run_reward_model

    rm = run_reward_model(
        RewardModelConfig(
            from_=str(nano_chat),
            prefs=[nano_world / "prefs"],
            feedback=False,
            out=tmp_path / "rm",
            max_steps=2,
            batch_size=4,
            threads=1,
        )
    )
    cfg = _nano_cfg(nano_chat, nano_world, tmp_path / "rlhf", method="rlhf", reward_model=rm["out"])
    result = run_rl(cfg)
    lineage = read_lineage(Path(result["out"]))
    assert lineage["method"] == "rlhf" and lineage["rewards"] == {"reward_model": 1.0, "answer": 0.0}
    rows = [json.loads(x) for x in (Path(result["out"]) / "metrics.jsonl").read_text().splitlines()]
    # the proxy is the reward model's score; the verifier's answer reward is shown beside it, unweighted
    assert all(r["rewards"]["reward_model"] is not None and r["rewards"]["answer"] is not None for r in rows)
    assert all(r["reward"] == pytest.approx(r["rewards"]["reward_model"]) for r in rows)
    assert (Path(result["out"]) / "report.md").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_rlaif_runs_on_a_judge_behind_our_gateway(
    gateway: str,
    nano_chat: Path,
    nano_world: Path,
    tmp_path: Path,
) -> None:
    constitution = tmp_path / "short.md"  # the nano judge's window is 1024 tokens: leave room for passages
    constitution.write_text("1. Grounded in the passages.\n2. Cites the passage.\n3. Concise.\n")
    cfg = _nano_cfg(
        nano_chat,
        nano_world,
        tmp_path / "rlaif",
        method="rlaif",
        judge_url=gateway,
        judge_model="keepcurrent",
        constitution=constitution,
    )
    result = run_rl(cfg)
    out = Path(result["out"])
    assert read_lineage(out)["rewards"] == {"judge": 1.0, "answer": 0.0}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["rewards"]["judge"] <= 1 for r in rows)
    judged = [json.loads(x) for x in (out / "judge.jsonl").read_text().splitlines()]
    assert len(judged) == 2 * 2 * 2  # steps x prompts x completions: every judge prompt and raw reply
    assert all("Cites the passage" in r["messages"][0]["content"] and "judgment" in r for r in judged)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_save(
    nano_chat: Path, nano_world: Path, tmp_path: Path, kill_once_saved: Any
) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "rl"
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "rl",
        "--method",
        "rlvr",
        "--from",
        str(nano_chat),
        "--data",
        str(nano_world / "rl"),
        "--out",
        str(out),
        "--max-steps",
        "6",
        "--eval-every",
        "2",
        "--eval-rows",
        "4",
        "--prompts-per-step",
        "2",
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
        "--threads",
        "1",
    ]
    env = {**os.environ, "KC_HOME": str(tmp_path / "home")}
    kill_once_saved(cmd, out / "trainer" / "checkpoint-2" / "trainer_state.json", env)  # its last file
    assert not (out / "lineage.json").exists()
    done = subprocess.run([*cmd, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr and "(step 2)" in done.stderr
    assert json.loads(done.stdout)["metrics"]["steps"] == 6
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # each step once: the killed run's rows after its save are dropped
    evals = [e["step"] for e in json.loads((out / "guard.json").read_text())["evals"]]
    assert evals == list(range(0, 7, 2))
    again = subprocess.run([*cmd, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stderr
