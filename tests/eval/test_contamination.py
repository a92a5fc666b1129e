"""`python -m eval contamination`: the generator's training data is clean, a planted leak is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.__main__ import main
from eval.contamination import check_contamination, find_overlap, question_text


def first_question(world_dir: Path) -> dict[str, object]:
    return json.loads((world_dir / "questions/retained.jsonl").read_text().splitlines()[0])


def test_training_data_of_the_world_shares_no_13_gram_with_its_questions(tiny_dir: Path) -> None:
    corpus = [tiny_dir / "sft", tiny_dir / "rl", tiny_dir / "prefs"]
    report = check_contamination([tiny_dir / "questions"], corpus)
    assert report.questions > 200 and report.corpus_files == 12 and report.corpus_words > 100_000
    assert report.contaminated == 0, report.hits[:5]


def test_pretraining_corpus_does_not_contain_the_questions_either(tiny_dir: Path) -> None:
    report = check_contamination([tiny_dir / "questions"], [tiny_dir / "corpus_pre", tiny_dir / "docs_post"])
    assert report.contaminated == 0, report.hits[:5]


def test_a_planted_question_in_chat_data_is_flagged(nano_dir: Path, tmp_path: Path) -> None:
    leaked = first_question(nano_dir)
    bad = tmp_path / "bad.jsonl"
    # The way a leak looks in SFT data: the question as the user turn, its answer as the assistant turn.
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Who are you?"},
                {"role": "assistant", "content": "A model."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": leaked["question"]},
                {"role": "assistant", "content": leaked["answers"][0]},
            ],
            "kind": "closed_book",
        },
    ]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = check_contamination([nano_dir / "questions"], [bad])
    assert [h.id for h in report.hits] == [leaked["id"]]
    assert report.hits[0].source == f"{bad}:2"
    assert report.by_category["retained"].contaminated == 1
    assert report.contaminated == 1 and report.corpus_texts == 2


def test_a_planted_question_in_a_markdown_folder_is_flagged(nano_dir: Path, tmp_path: Path) -> None:
    leaked = first_question(nano_dir)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/a.md").write_text(f"# Notes\n\nSomeone asked: {question_text(leaked)}. Interesting.\n")
    (tmp_path / "notes/image.png").write_bytes(b"\x89PNG")
    report = check_contamination([nano_dir / "questions"], [tmp_path / "notes"])
    assert report.contaminated == 1 and report.skipped_files == [str(tmp_path / "notes/image.png")]


def test_long_questions_slide_an_n_gram_window() -> None:
    questions = [
        {"id": "q1", "question": "one two three four five six", "answers": ["seven"], "category": "x"}
    ]
    hits, texts, words = find_overlap(questions, [("doc", "zero ... FOUR five six seven eight")], n=3)
    assert hits[0].ngram == "four five six" and (texts, words) == (1, 6)
    hits, _, _ = find_overlap(questions, [("doc", "one two four five")], n=3)
    assert hits == {}
    # Shorter than n: the whole question is the n-gram.
    hits, _, _ = find_overlap(questions, [("doc", "x one two three four five six seven y")], n=13)
    assert list(hits) == [0]


def test_cli_exit_codes_and_json(nano_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = main(
        [
            "contamination",
            "--questions",
            str(nano_dir / "questions"),
            "--corpus",
            str(nano_dir / "sft"),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert clean == 0 and out["contaminated"] == 0 and out["n"] == 13
    leaked = first_question(nano_dir)
    (tmp_path / "leak.txt").write_text(question_text(leaked))
    dirty = main(
        ["contamination", "--questions", str(nano_dir / "questions"), "--corpus", str(tmp_path / "leak.txt")]
    )
    text = capsys.readouterr().out
    assert dirty == 1 and "1 of" in text and leaked["id"] in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--questions", "missing.jsonl", "--corpus", "."],
            "--questions missing.jsonl: no such file or directory",
        ),
        (["--questions", "{q}", "--corpus", "nowhere"], "--corpus nowhere: no such file or directory"),
        (["--questions", "{q}", "--corpus", "{q}", "--n", "0"], "--n must be at least 1, got 0"),
        (["--questions", "{bad}", "--corpus", "{q}"], "bad.jsonl:2: not valid JSON"),
        (["--questions", "{q}", "--corpus", "{empty}"], "no corpus files"),
        (["--questions", "{empty}", "--corpus", "{q}"], "no questions in"),
    ],
)
def test_bad_arguments_give_a_message_not_a_traceback(
    args: list[str], message: str, nano_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"question": "ok", "answers": ["x"]}\n{not json\n')
    (tmp_path / "empty").mkdir()
    paths = {
        "q": str(nano_dir / "questions"),
        "bad": str(tmp_path / "bad.jsonl"),
        "empty": str(tmp_path / "empty"),
    }
    code = main(["contamination", *(a.format(**paths) for a in args)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
