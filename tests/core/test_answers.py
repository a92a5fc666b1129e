"""core.answers: the one definition of answer matching (issue 21), pinned on hand-made cases."""

from __future__ import annotations

import pytest

from core.answers import (
    ABSTENTION_PHRASES,
    contains_answer,
    contains_phrase,
    exact_match,
    is_abstention,
    normalise,
    strip_citations,
)
from core.prompts import ABSTAIN_ANSWER


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        # case, whitespace, punctuation
        ("  Kelvor   DYNAMICS. ", "kelvor dynamics"),
        ("Orvan Teel!?", "orvan teel"),
        ("sys._jit", "sys jit"),  # underscores are punctuation too
        # articles, as whole words only
        ("The  Kelvor Dynamics [2].", "kelvor dynamics"),
        ("a chemist", "chemist"),
        ("An Arden", "arden"),
        ("Theo Anders", "theo anders"),  # "the"/"an" inside a word stay
        ("The", ""),
        # citation markers
        ("Orvan Teel [1][3]", "orvan teel"),
        ("Orvan Teel[2]", "orvan teel"),
        # Unicode quotes fold like ASCII ones
        ("“Orvan Teel”, [1][3]", "orvan teel"),
        ("‘Orvan Teel’", "orvan teel"),
        ("I don’t know", "i don t know"),
        ("I don't know", "i don t know"),
        ("«Arden»", "arden"),
        # dashes of every kind are one
        ("RISC-V", "risc v"),
        ("RISC–V", "risc v"),
        ("RISC—V", "risc v"),
        ("RISC‐V", "risc v"),
        ("1990−2000", "1990 2000"),
        # numbers: thousands separators go, decimal points split
        ("412,000", "412000"),
        ("1,000,000", "1000000"),
        ("$1,234.5", "1234 5"),
        ("3.14", "3 14"),
        ("1,2,3", "1 2 3"),  # not thousands: a list
        ("1,0000", "1 0000"),
        # Unicode: composed and decomposed letters are one, case folded fully
        ("Café", "café"),
        ("Cafe\u0301", "café"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("", ""),
        ("[2].", ""),
    ],
)
def test_normalise(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


@pytest.mark.parametrize(
    ("prediction", "answers", "em"),
    [
        ("Kelvor Dynamics [2]", ["Kelvor Dynamics", "Kelvor"], True),
        ("kelvor", ["Kelvor Dynamics", "Kelvor"], True),  # any alias
        ("The Kelvor Dynamics.", ["Kelvor Dynamics"], True),  # articles
        ("“Kelvor Dynamics”", ["Kelvor Dynamics"], True),
        ("Kelvor–Dynamics", ["Kelvor-Dynamics"], True),
        ("1000", ["1,000"], True),
        ("1,000", ["1000"], True),
        ("732,000", ["732,000"], True),
        ("It is Kelvor Dynamics.", ["Kelvor Dynamics"], False),  # the whole answer, not a part
        ("Kelvor Dynamics Inc", ["Kelvor Dynamics"], False),
        ("Kelvor", ["Kelvor Dynamics"], False),
        ("3.1", ["3.14"], False),
        ("1,000", ["1,000,000"], False),
        ("", ["x"], False),
        ("The", ["A"], False),  # nothing left on either side is no match
        ("x", [], False),
    ],
)
def test_exact_match(prediction: str, answers: list[str], em: bool) -> None:
    assert exact_match(prediction, answers) is em


@pytest.mark.parametrize(
    ("text", "phrase", "found"),
    [
        ("It is Kelvor Dynamics.", "Kelvor Dynamics", True),
        ("The chief is Orvan Teel [1].", "orvan teel", True),
        ("Varnel", "Varn", False),  # whole words only
        ("Orvan Teelman", "Orvan Teel", False),
        ("Python 3.14 was released", "3.1", False),  # "3 1" is not in "3 14"
        ("Python 3.14 was released", "3.14", True),
        ("Python 3.14.0 was released", "3.14", True),  # a version's release is within it
        ("sold 1,000,000 units", "1,000", False),
        ("sold 1,000 units", "1000", True),
        ("sold 1000 units", "1,000", True),
        ("the documents do not say", "The documents", True),
        ("Known for the Zephyr", "unknown", False),
        ("anything", "", False),
        ("anything", "The", False),
        ("It is “RISC—V”.", "RISC-V", True),
    ],
)
def test_contains_phrase(text: str, phrase: str, found: bool) -> None:
    assert contains_phrase(text, phrase) is found


def test_contains_answer_takes_any_alias() -> None:
    assert contains_answer("The job of Orvan Teel is chemist.", ["physicist", "chemist"])
    assert not contains_answer("The job of Orvan Teel is chemistry.", ["physicist", "chemist"])
    assert not contains_answer("anything", [])


@pytest.mark.parametrize(
    "text",
    [
        ABSTAIN_ANSWER,
        "The documents do not say.",
        "Documents do not say [2]",
        "the documents do not say",
        "I don't know",
        "I don’t know.",
        "I do not know.",
        "That is not mentioned.",
        "The passages do not contain the answer.",
        "No information about that [1].",
        "Unknown.",
        "",
        "  ",
        "[3]",
    ],
)
def test_abstentions_recognised(text: str) -> None:
    assert is_abstention(text)


@pytest.mark.parametrize(
    "text", ["Orvan Teel [2]", "Known for the Zephyr", "The documents say Arden.", "Noinformation"]
)
def test_answers_are_not_abstentions(text: str) -> None:
    assert not is_abstention(text)


def test_every_abstention_phrase_is_an_abstention() -> None:
    assert ABSTAIN_ANSWER in ABSTENTION_PHRASES
    assert all(is_abstention(p) and is_abstention(p.upper() + " [1]") for p in ABSTENTION_PHRASES)


def test_strip_citations_keeps_the_text_as_written() -> None:
    assert strip_citations("Orvan Teel [2]") == "Orvan Teel"
    assert strip_citations("  The Kelvor  Dynamics[1][3]. ") == "The Kelvor  Dynamics."
    assert strip_citations("No citation") == "No citation"
