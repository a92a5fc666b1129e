from __future__ import annotations

import math

import pytest

from core import answers
from core.prompts import ABSTAIN_ANSWER
from eval.metrics import (
    bootstrap_ci,
    contains_answer,
    exact_match,
    is_abstention,
    percentile,
    recall_at_k,
    score_answer,
    token_f1,
    truthfulness,
)
from service.strategies import base


@pytest.mark.parametrize(
    ("prediction", "answers", "em", "contains"),
    [
        ("Kelvor Dynamics [2]", ["Kelvor Dynamics", "Kelvor"], True, True),
        ("kelvor", ["Kelvor Dynamics", "Kelvor"], True, True),
        ("It is Kelvor Dynamics.", ["Kelvor Dynamics"], False, True),
        ("Varnel", ["Varn"], False, False),  # whole words only
        ("412,000", ["412,000", "412000"], True, True),
        ("Arden", ["Kelvor"], False, False),
    ],
)
def test_exact_and_contains(prediction: str, answers: list[str], em: bool, contains: bool) -> None:
    assert exact_match(prediction, answers) is em
    assert contains_answer(prediction, answers) is contains


def test_token_f1_takes_the_best_alias() -> None:
    assert token_f1("Orvan Teel", ["Orvan Teel"]) == 1.0
    assert token_f1("Orvan", ["Orvan Teel"]) == pytest.approx(2 / 3)
    assert token_f1("Mira Solt", ["Orvan Teel"]) == 0.0
    assert token_f1("the Zephyr 9 drone", ["Zephyr", "Zephyr 9 drone"]) == 1.0


@pytest.mark.parametrize(
    "text", [ABSTAIN_ANSWER, "The documents do not say.", "I don't know", "", "That is not mentioned."]
)
def test_abstentions_recognised(text: str) -> None:
    assert is_abstention(text)


def test_answers_are_not_abstentions() -> None:
    assert not is_abstention("Orvan Teel [2]")
    assert not is_abstention("Known for the Zephyr")  # 'unknown' only as a whole word


def test_the_eval_and_the_gateway_share_one_definition_of_an_answer() -> None:
    assert is_abstention is base.is_abstention is answers.is_abstention
    assert exact_match is answers.exact_match and contains_answer is answers.contains_answer
    assert is_abstention("Documents do not say [2]") and is_abstention("I don’t know.")


def test_truthfulness_rewards_right_answers_and_charges_wrong_ones() -> None:
    assert truthfulness(correct=True, abstained=False) == 1
    assert truthfulness(correct=False, abstained=True) == 0
    assert truthfulness(correct=False, abstained=False) == -1
    # On `unanswerable` the abstention is the right answer: score_answer marks it correct, so +1.
    s = score_answer(ABSTAIN_ANSWER, [ABSTAIN_ANSWER], "unanswerable")
    assert truthfulness(s.correct, s.abstained) == 1
    s = score_answer("Arden", [ABSTAIN_ANSWER], "unanswerable")
    assert truthfulness(s.correct, s.abstained) == -1


def test_score_by_category() -> None:
    updated = dict(answers=["Mira Solt"], category="updated", stale_answers=["Orvan Teel"])
    assert score_answer("Mira Solt [1]", **updated).correct  # type: ignore[arg-type]
    stale = score_answer("Orvan Teel", **updated)  # type: ignore[arg-type]
    assert stale.stale and not stale.correct
    both = score_answer("Orvan Teel, now Mira Solt", **updated)  # type: ignore[arg-type]
    assert both.correct and not both.stale

    assert score_answer(ABSTAIN_ANSWER, [ABSTAIN_ANSWER], "unanswerable").correct
    hallucinated = score_answer("Arden", [ABSTAIN_ANSWER], "unanswerable")
    assert not hallucinated.correct and not hallucinated.abstained

    declined = score_answer("The documents do not say.", ["Arden"], "new")
    assert declined.abstained and not declined.correct


def test_recall_at_k() -> None:
    assert recall_at_k(["a", "b", "c"], ["c", "d"], 3) == 0.5
    assert recall_at_k(["a", "b", "c"], ["c"], 2) == 0.0
    assert recall_at_k(["a"], [], 5) is None


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic() -> None:
    values = [1.0] * 60 + [0.0] * 40
    lo, hi = bootstrap_ci(values)
    assert lo < 0.6 < hi and hi - lo < 0.25
    assert bootstrap_ci(values) == (lo, hi)
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert percentile(list(range(101)), 95) == 95
