"""The reward model: preference pairs from files and from the gateway's /feedback table, Bradley–Terry
training with TRL, held-out pair accuracy, the checkpoint, and the scorer RL calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.feedback import read_feedback
from core.registry import list_checkpoints
from core.settings import Settings
from trainer.__main__ import main, make_parser
from trainer.checkpoint import read_lineage
from trainer.reward_model import (
    RewardModelConfig,
    feedback_pairs,
    gather_pairs,
    read_prefs,
    run_reward_model,
    split_pairs,
)
from trainer.scorer import RewardScorer

PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Who leads Kelvor?"}]


QUESTION = "In which city was Orvan Teel born?"


def store_feedback(url: str | None = None) -> None:
    """What users leave through POST /feedback, written by the gateway's own store."""
    from service.api_schemas import PreferenceFeedback, RatingFeedback
    from service.feedback import FeedbackStore

    Settings().ensure_home()  # the gateway makes KC_HOME at start-up
    store = FeedbackStore(url or Settings().resolved_database_url)
    q = QUESTION
    padded = "Great question! I believe the answer is Korme. I hope this helps!"
    store.add(PreferenceFeedback(kind="preference", question=q, chosen="Korme", rejected=padded))
    rated = [("Korme", 5), ("Thanks for asking! It is Korme, I think. Anything else?", 2), ("Nikrai", 1),
             ("Korme", 5)]  # fmt: skip
    for answer, rating in rated:
        store.add(RatingFeedback(kind="rating", question=q, answer=answer, rating=rating))


def test_pref_rows_are_read_or_skipped_with_a_reason(tmp_path: Path) -> None:
    good = {"prompt": PROMPT, "chosen": "Orvan Teel", "rejected": "Sta Ind", "rejected_kind": "stale"}
    rows = [
        good,
        {**good, "prompt": "Who leads Kelvor?", "rejected_kind": None},  # a string prompt: a user turn
        {**good, "chosen": ""},
        {**good, "rejected": good["chosen"]},
        {**good, "prompt": [{"role": "user"}]},
        {**good, "prompt": [*PROMPT, {"role": "assistant", "content": "Orvan Teel"}]},
        ["not", "an", "object"],
    ]
    f = tmp_path / "prefs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs, skipped = read_prefs([f])
    assert [(p.kind, p.prompt[-1]["content"]) for p in pairs] == [
        ("stale", "Who leads Kelvor?"),
        ("unknown", "Who leads Kelvor?"),
    ]
    assert [s.split(": ", 1)[0] for s in skipped] == [f"{f}:{n}" for n in (3, 4, 5, 6, 7)]
    assert "non-empty strings" in skipped[0] and "same answer" in skipped[1] and "assistant" in skipped[3]
    f.write_text(json.dumps(good) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"prefs.jsonl:2: not valid JSON"):
        read_prefs([f])


def test_feedback_rows_become_pairs(tmp_path: Path) -> None:
    url = Settings().resolved_database_url
    assert read_feedback(url) == []
    assert not Path(url.removeprefix("sqlite:///")).exists()  # reading created nothing
    store_feedback()
    rows = read_feedback(url)
    assert [r.kind for r in rows] == ["preference", "rating", "rating", "rating", "rating"]
    pairs = feedback_pairs(rows)
    # The preference, then every two distinct answers rated differently; "Korme" rated twice counts once.
    assert [(p.kind, p.chosen[:10], p.rejected[:10]) for p in pairs] == [
        ("feedback-preference", "Korme", "Great ques"),
        ("feedback-rating", "Korme", "Thanks for"),
        ("feedback-rating", "Korme", "Nikrai"),
        ("feedback-rating", "Thanks for", "Nikrai"),
    ]
    assert all(p.prompt == [{"role": "user", "content": QUESTION}] for p in pairs)


@pytest.mark.integration
def test_feedback_on_postgres(postgres_url: str) -> None:
    store_feedback(postgres_url)
    rows = [r for r in read_feedback(postgres_url) if r.question == QUESTION]
    assert len(rows) == 5 and len(feedback_pairs(rows)) == 4


def test_split_keeps_a_prompt_on_one_side(nano_world: Path) -> None:
    pairs, _ = read_prefs(sorted((nano_world / "prefs").glob("*.jsonl")))
    doubled = pairs + [type(p)(p.prompt, p.chosen + "!", p.rejected, p.kind) for p in pairs]
    train, held = split_pairs(doubled, 0.3, seed=0)
    assert len(train) + len(held) == len(doubled) and held
    held_prompts = {json.dumps(p.prompt) for p in held}
    assert not any(json.dumps(p.prompt) in held_prompts for p in train)
    assert split_pairs(doubled, 0.3, seed=0) == (train, held)


def test_help_shows_the_flags(capsys: pytest.CaptureFixture[Any]) -> None:
    with pytest.raises(SystemExit) as exc:
        make_parser().parse_args(["reward-model", "--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0 and "--prefs" in text and "--feedback, --no-feedback" in text
    args = make_parser().parse_args(["reward-model", "--from", "x", "--no-feedback"])
    assert (
        args.feedback is False and make_parser().parse_args(["reward-model", "--from", "x"]).feedback is None
    )


def test_cli_errors_are_one_line(
    nano_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[Any]
) -> None:
    prefs = str(nano_world / "prefs")
    assert main(["reward-model", "--from", str(tmp_path / "nowhere"), "--prefs", prefs]) == 2
    assert "neither a directory nor a registered tag" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert main(["reward-model", "--from", str(empty), "--prefs", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    assert main(["reward-model", "--from", str(empty)]) == 2
    assert "no preference pairs" in capsys.readouterr().err
    assert main(["reward-model", "--from", str(empty), "--prefs", prefs, "--feedback"]) == 2
    assert "no usable ratings or preferences" in capsys.readouterr().err


@pytest.mark.slow
def test_reward_model_learns_the_preferences(nano_chat: Path, nano_world: Path, tmp_path: Path) -> None:
    """Padded against concise answers is learnable by a nano model: after training the scorer ranks every
    such training pair right, the feedback rows were used, and the checkpoint is a registered reward model."""
    store_feedback()
    cfg = RewardModelConfig(from_=str(nano_chat), prefs=[nano_world / "prefs"], out=tmp_path / "rm",
                            epochs=12, lr=2e-3, batch_size=8, eval_fraction=0.25, threads=1)  # fmt: skip
    result = run_reward_model(cfg)
    m, data = result["metrics"], result["data"]
    assert data["pairs_from_files"] == 24 and data["pairs_from_feedback"] == 4 and data["skipped_rows"] == 0
    assert m["pairs_train"] + m["pairs_heldout"] == 28 and m["pairs_heldout"] > 0
    assert 0 <= m["heldout_accuracy"] <= 1 and set(m["heldout"]["by_kind"]) <= {
        "hallucinated", "stale", "padded", "feedback-preference", "feedback-rating"}  # fmt: skip
    assert m["train_accuracy"] >= 0.75

    out = Path(result["out"])
    lineage = read_lineage(out)
    assert lineage["phase"] == "reward" and lineage["parent"] == str(nano_chat)
    assert lineage["metrics"]["heldout_accuracy"] == m["heldout_accuracy"]
    assert lineage["config"]["feedback"] is None and lineage["data"]["pairs_from_feedback"] == 4
    (entry,) = list_checkpoints(Settings().resolved_database_url, "reward")
    assert entry.path == str(out.resolve()) and entry.tag == "nano-session-sft-rm"

    pairs, _ = gather_pairs(cfg)
    train, _ = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
    easy = [p for p in train if p.kind in ("padded", "feedback-preference", "feedback-rating")]
    assert len(easy) >= 6
    scorer = RewardScorer(out)
    prompts = [p.prompt for p in easy]
    chosen = scorer.score(prompts, [p.chosen for p in easy])
    rejected = scorer.score(prompts, [p.rejected for p in easy])
    assert all(c > r for c, r in zip(chosen, rejected, strict=True)), list(zip(chosen, rejected, strict=True))
    assert scorer.score(prompts[:1], [easy[0].chosen]) == pytest.approx(chosen[:1], abs=1e-5)  # batch-free

    with pytest.raises(ValueError, match="not a reward model"):
        RewardScorer(nano_chat)
