"""`python -m eval whatsnew-rows`: every row is grounded in the passage it cites, abstain rows' passages lack
the answer, the output is deterministic for a seed, and no row overlaps an eval question of either set.

Runs on the vendored pages of 3.9-3.12 (where most of the `retained` eval questions' facts are), so that the
contamination check meets the facts it must drop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from core.answers import contains_answer, contains_phrase
from core.prompts import ABSTAIN_ANSWER, GROUNDED_SYSTEM, PASSAGES_CLOSE, PASSAGES_OPEN, cite
from eval.__main__ import main
from eval.contamination import check_contamination, load_questions
from eval.whatsnew import (
    SFT_KINDS,
    EvalGuard,
    Fact,
    WhatsNewConfig,
    extract_facts,
    generate,
    load_pages,
    run,
)
from trainer.rewards import answer_reward, citation_reward, format_reward
from trainer.rl import read_rl_rows

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "data/python-docs/whatsnew-pre"
QUESTIONS = ROOT / "data/python-docs/questions.jsonl"
VERSIONS = ["3.9", "3.10", "3.11", "3.12"]


def config(**overrides: Any) -> WhatsNewConfig:
    cfg = WhatsNewConfig(
        pages=PAGES, versions=VERSIONS, eval_questions=[QUESTIONS], worlds=["nano:0"], rl_rows=60
    )
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(scope="module")
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whatsnew") / "rows"
    run(config(), out)
    return out


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prompt_parts(messages: list[dict[str, str]]) -> tuple[list[str], str]:
    """(passages, question) of a grounded prompt:
    "<passages>\\n[1] ...\\n[2] ...\\n</passages>\\n\\nQuestion: ..."."""
    assert [m["role"] for m in messages[:2]] == ["system", "user"]
    assert messages[0]["content"] == GROUNDED_SYSTEM
    block, question = messages[1]["content"].rsplit("\n\nQuestion: ", 1)
    opening, *lines, closing = block.split("\n")
    assert (opening, closing) == (PASSAGES_OPEN, PASSAGES_CLOSE), block
    assert all(line.startswith(f"[{n}] ") for n, line in enumerate(lines, 1)), lines
    return [line.split("] ", 1)[1] for line in lines], question


_SHOWN = re.compile(r"What's New in Python (?P<version>\d+\.\d+) \((?P<date>\d{4}-\d\d-\d\d)\): (?P<text>.+)")


def shown(passage: str) -> re.Match[str]:
    """A passage as served: its page's title and date, then its text."""
    m = _SHOWN.fullmatch(passage)
    assert m, passage
    return m


def cited(answer: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+) \[(\d+)\]", answer)
    assert m, answer
    return m[1], int(m[2])


def test_reading_and_distractor_rows_cite_the_one_passage_that_states_the_answer(rows_dir: Path) -> None:
    reading, distractor = jsonl(rows_dir / "sft/reading.jsonl"), jsonl(rows_dir / "sft/distractor.jsonl")
    assert len(reading) > 300 and len(distractor) > 5
    sizes = set()
    for row in [*reading, *distractor]:
        messages = row["messages"]
        assert isinstance(messages, list) and messages[-1]["role"] == "assistant" and len(messages) == 3
        passages, question = prompt_parts(messages)
        answer, k = cited(messages[-1]["content"])
        assert 1 <= k <= len(passages)
        assert answer in passages[k - 1], (question, answer)  # verbatim, as the generator asserts
        assert answer.lower() not in question.lower()
        others = [p for n, p in enumerate(passages, 1) if n != k]
        assert not any(contains_phrase(p, answer) for p in others), (question, answer)
        sizes.add(len(passages))
        versions = [shown(p)["version"] for p in passages]  # every passage titled and dated
        if row["kind"] == "distractor":
            # two versions' pages, and the question names the gold passage's version
            assert len(passages) == 2 and versions[0] != versions[1]
            assert re.search(rf"Python {re.escape(versions[k - 1])}(?!\d)", question), question
    assert {1, 3, 4} <= sizes  # single-passage rows, and multi-passage ones


def test_gold_passages_are_windows_of_the_page(rows_dir: Path) -> None:
    words = []
    for row in jsonl(rows_dir / "sft/reading.jsonl"):
        passages, _ = prompt_parts(row["messages"])
        _, k = cited(row["messages"][-1]["content"])
        words.append(len(shown(passages[k - 1])["text"].split()))
    words.sort()
    assert words[-1] <= 150 and 60 <= words[len(words) // 2] <= 150


def test_distractors_hold_another_value_of_the_asked_type(rows_dir: Path) -> None:
    """A "which PEP" question's other passages name other PEPs, an issue question's other issues."""
    typed = {r"PEP \d+": re.compile(r"\bPEP \d+"), r"(?:gh|bpo)-\d+": re.compile(r"\b(?:gh|bpo)-\d+")}
    counts = {shape: [0, 0] for shape in typed}
    for row in jsonl(rows_dir / "sft/reading.jsonl"):
        passages, _ = prompt_parts(row["messages"])
        answer, k = cited(row["messages"][-1]["content"])
        for shape, pattern in typed.items():
            if len(passages) > 1 and re.fullmatch(shape, answer):
                others = [p for n, p in enumerate(passages, 1) if n != k]
                counts[shape][0] += sum(bool(pattern.search(p)) for p in others)
                counts[shape][1] += len(others)
    for shape, (n_typed, n_others) in counts.items():
        assert n_others > 10 and n_typed / n_others > 0.9, (shape, n_typed, n_others)


def test_abstain_rows_have_passages_without_the_answer(rows_dir: Path) -> None:
    rows = jsonl(rows_dir / "sft/abstain.jsonl")
    facts = {f.question: f for page in load_pages(PAGES, VERSIONS) for f in extract_facts(page)}
    assert rows
    for row in rows:
        messages = row["messages"]
        assert messages[-1] == {"role": "assistant", "content": ABSTAIN_ANSWER}
        passages, question = prompt_parts(messages)
        fact = facts[question]
        assert passages and not any(contains_answer(p, fact.aliases) for p in passages), question
    manifest = json.loads((rows_dir / "manifest.json").read_text())
    assert abs(manifest["counts"]["abstain_share"] - 0.15) < 0.01


def test_rl_rows_are_held_out_and_their_rewards_pay_the_gold_answer(rows_dir: Path) -> None:
    rows = read_rl_rows([rows_dir / "rl/grounded.jsonl"])  # as `python -m trainer rl --data` reads them
    assert len(rows) >= 50 and {r["kind"] for r in rows} == {"grounded"}
    sft_questions = {
        prompt_parts(r["messages"])[1] for kind in SFT_KINDS for r in jsonl(rows_dir / f"sft/{kind}.jsonl")
    }
    for row in rows:
        passages, question = prompt_parts(row["prompt"])
        assert passages == row["passages"] and question not in sft_questions
        gold, answers = row["gold_passage"], row["answers"]
        assert answers[0] in passages[gold - 1]
        assert not any(contains_answer(p, answers) for n, p in enumerate(passages, 1) if n != gold)
        completion = cite(answers[0], gold)
        assert answer_reward(completion, answers) == 1.0
        assert citation_reward(completion, answers, "grounded", passages) == 1.0
        assert format_reward(completion, "grounded") == 1.0


def test_manifest_counts_and_hashes_match_the_files(rows_dir: Path) -> None:
    manifest = json.loads((rows_dir / "manifest.json").read_text())
    assert manifest["generator"] == "whatsnew-rows" and manifest["seed"] == 0
    counts = manifest["counts"]
    for kind in SFT_KINDS:
        assert counts["sft"][kind] == len(jsonl(rows_dir / f"sft/{kind}.jsonl"))
    assert counts["rl"]["grounded"] == len(jsonl(rows_dir / "rl/grounded.jsonl"))
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((rows_dir / rel).read_bytes()).hexdigest() == digest
    assert sorted(manifest["pages"]) == sorted(f"whatsnew-{v}.md" for v in VERSIONS)
    assert set(manifest["dropped"]) >= {"states_eval_answer", "ngram_overlap", "eval_questions"}


def test_deterministic_for_a_seed() -> None:
    small = {"versions": ["3.12"], "limit": 120, "rl_rows": 10, "worlds": []}
    a, b, c = generate(config(**small)), generate(config(**small)), generate(config(**small, seed=1))
    assert a.sft == b.sft and a.rl == b.rl
    assert a.sft != c.sft


def test_no_row_overlaps_an_eval_question_of_either_set(rows_dir: Path, nano_dir: Path) -> None:
    for questions in (QUESTIONS, nano_dir / "questions"):
        report = check_contamination([questions], [rows_dir])
        assert report.questions > 30 and report.corpus_files == 5
        assert report.contaminated == 0, report.hits
    # The pages state several `retained` eval facts: the guard dropped them, turned round ones included.
    manifest = json.loads((rows_dir / "manifest.json").read_text())
    assert sum(manifest["dropped"]["states_eval_answer"].values()) >= 5
    answers = {cited(r["messages"][-1]["content"])[0] for r in jsonl(rows_dir / "sft/reading.jsonl")}
    assert not answers & {
        "PEP 634",
        "PEP 654",
        "PEP 695",
        "itertools.batched()",
        "Structural Pattern Matching",
    }


def test_the_guard_catches_an_eval_fact_asked_either_way() -> None:
    guard = EvalGuard(load_questions([QUESTIONS]), 13)
    fact = Fact(
        "3.10", "pep", "Which PEP introduced structural pattern matching in Python 3.10?", "PEP 634", 0
    )
    turned = Fact("3.10", "pep_title", "What is the title of PEP 634?", "Structural Pattern Matching", 0)
    other = Fact(
        "3.10", "pep", "Which PEP added parenthesized context managers in Python 3.10?", "PEP 617", 0
    )
    assert guard.states_eval_answer(fact) and guard.states_eval_answer(turned)
    assert not guard.states_eval_answer(other)
    asked = "Which PEP specifies structural pattern matching in Python 3.10?"
    leak: dict[str, object] = {
        "messages": [{"role": "user", "content": asked}, {"role": "assistant", "content": "PEP 634"}]
    }
    assert guard.overlaps(leak)


def test_cli_writes_the_rows_and_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows"
    args = ["--pages", str(PAGES), "--versions", "3.12", "--limit", "100", "--rl-rows", "10"]
    code = main(
        ["whatsnew-rows", *args, "--eval-questions", str(QUESTIONS), "--worlds", "--out", str(out), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["sft_total"] > 50 and summary["config"]["worlds"] == []
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["manifest.json", "rl/grounded.jsonl", *(f"sft/{k}.jsonl" for k in sorted(SFT_KINDS))]
    # written again in place; the contamination command agrees that nothing leaks
    assert (
        main(["whatsnew-rows", *args, "--eval-questions", str(QUESTIONS), "--worlds", "--out", str(out)]) == 0
    )
    assert main(["contamination", "--questions", str(QUESTIONS), "--corpus", str(out)]) == 0


@pytest.mark.parametrize("bad", ["missing", "empty", "foreign-out"])
def test_bad_input_exits_2_with_one_line(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pages, out = tmp_path / "missing", tmp_path / "out"
    if bad == "empty":
        pages.mkdir()
    elif bad == "foreign-out":
        pages = PAGES
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code = main(["whatsnew-rows", "--pages", str(pages), "--versions", "3.12", "--worlds", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.startswith("python -m eval whatsnew-rows: error:")
    assert {"missing": "no such directory", "empty": "no whatsnew-*.md pages", "foreign-out": "not empty"}[
        bad
    ] in err
