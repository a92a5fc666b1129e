"""`python -m eval run` and `compare` end to end: a nano world, its post-cutoff documents ingested, an
untrained nano checkpoint on the real embedded engine (the harness is under test, not answer quality),
in-process and over HTTP against a live gateway; resume after an interruption; bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

# The gateway tests' helpers (a nano checkpoint built by the trainer's functions, a live gateway process).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from gateway_support import LiveGateway, build_nano_checkpoint, copy_checkpoint

from eval.__main__ import main
from eval.backends import InProcess
from eval.questions import load_questions
from eval.report import ResultRow, write_report
from eval.runner import _limit_per_file, read_results

CATEGORIES = ("multi_hop", "new", "retained", "unanswerable", "updated")


@pytest.fixture(scope="session")
def nano_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nano_checkpoint(tmp_path_factory.mktemp("models") / "nano")


@pytest.fixture(scope="session")
def nano_cpt(nano_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in CPT checkpoint whose lineage records its training time."""
    out = tmp_path_factory.mktemp("models") / "nano-cpt"
    return copy_checkpoint(nano_model, out, phase="cpt", tag="nano-cpt", metrics={"train_seconds": 42.5})


@pytest.fixture
def home(
    kc_home: Path, nano_dir: Path, nano_model: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """KC_HOME with the nano world's docs_post ingested and KC_MODEL set; the session's embedder is
    reused by every retriever the harness builds (loading MiniLM again takes seconds)."""
    from core.settings import Settings
    from indexer.pipeline import Index

    Index(Settings(), embedder=embedder).ingest(nano_dir / "docs_post", progress=False)
    monkeypatch.setattr("indexer.retriever.Embedder", lambda *a, **k: embedder)
    monkeypatch.setenv("KC_MODEL", str(nano_model))
    monkeypatch.setenv("KC_DEFAULT_MAX_TOKENS", "6")
    return kc_home


def run(*args: str) -> int:
    return main(["run", *args])


def test_in_process_run_writes_every_report_file(
    home: Path, nano_dir: Path, nano_model: Path, nano_cpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("KC_CPT_MODEL", str(nano_cpt))
    ingest = home / "ingest.json"
    ingest.write_text(json.dumps({"added": 16, "seconds": 12.5}))
    code = run(
        "--questions", str(nano_dir / "questions"), "--limit", "2", "--run-id", "r1",
        "--ingest-seconds", str(ingest), "--lc-sweep", "2,4", "--lc-positions", "0,1",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    run_dir = home / "reports" / "r1"
    assert f"report: {run_dir / 'report.html'}" in out and "| naive_rag |" in out
    for name in ("report.md", "report.html", "results.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name

    rows = read_results(run_dir / "results.jsonl")
    main_rows = [r for r in rows if r.variant is None]
    strategies = ("closed_book", "rag", "naive_rag", "long_context", "cpt", "auto")
    assert len(main_rows) == 10 * len(strategies)  # 2 questions of each of the 5 files
    asked = _limit_per_file(*load_questions([nano_dir / "questions"]), 2)  # sampling: its own test below
    assert {q.category for q in asked} == set(CATEGORIES)
    assert {(r.question_id, r.strategy) for r in main_rows} == {(q.id, s) for q in asked for s in strategies}
    assert not [r for r in rows if r.error]
    by = {(r.question_id, r.strategy): r for r in main_rows}
    # Recall counts the supporting documents that are in the index: new-0001 is post-0003.
    assert (
        by["new-0001", "naive_rag"].recall_at_k is not None and by["retained-0001", "rag"].recall_at_k is None
    )
    assert len(by["new-0001", "naive_rag"].retrieved) <= 3
    lc = by["new-0001", "long_context"]
    assert lc.coverage is not None and lc.docs_in_window and lc.answer_in_window is not None
    assert by["unanswerable-0001", "rag"].abstained  # the gate: no passage names the person
    assert all(r.prompt_tokens > 0 for r in main_rows if r.strategy in ("closed_book", "cpt"))

    sweep = [r for r in rows if r.variant is not None]
    swept = {r.question_id for r in sweep}  # questions with a supporting document in the index
    assert swept and all(q.split("-")[0] in ("new", "updated", "multi_hop") for q in swept)
    assert len(sweep) == len(swept) * 4
    assert {r.docs_in_window for r in sweep if r.variant == "n=2,pos=0"} == {2}
    assert {r.answer_position for r in sweep if r.variant == "n=4,pos=1"} == {1.0}

    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["strategies"]) == {*strategies, "oracle"} and summary["skipped"] == {}
    auto = [r for r in main_rows if r.strategy == "auto"]
    assert all(r.route and r.route["tried"][0]["strategy"] == "rag" for r in auto)
    assert sum(summary["strategies"]["auto"]["routes"].values()) == 10
    assert summary["index_version"] == 1 and summary["index"]["documents"] == 16
    assert Path(summary["model_path"]) == nano_model.resolve() and summary["engine"] == "embedded"
    assert summary["config"]["limit"] == 2 and summary["questions"] == 10
    assert [Path(f["path"]).name for f in summary["question_files"]] == [f"{c}.jsonl" for c in CATEGORIES]
    assert all(len(f["sha256"]) == 64 for f in summary["question_files"])
    costs = summary["costs"]
    assert costs["rag"]["absorb_seconds"] == 12.5 and costs["cpt"]["absorb_seconds"] == 42.5
    assert costs["long_context"]["absorb_seconds"] == 0.0 and "forgetting_retained" in costs["cpt"]
    assert costs["auto"]["vs_best"]["best"] in ("closed_book", "rag", "long_context", "cpt")
    assert summary["settings"]["auto_routes"] == ["rag", "long_context"]
    assert set(summary["lc_sweep_results"]) == {"2", "4"}
    s = summary["strategies"]["rag"]
    assert s["abstention_accuracy"]["n"] == 2 and s["latency_ms"]["p95"] >= s["latency_ms"]["p50"]

    md = (run_dir / "report.md").read_text()
    assert "Cost of absorbing" in md and "answer position" in md and "Ovadia" in md
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page


def test_interrupted_run_resumes_without_asking_again(
    home: Path, nano_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str]] = []
    real_ask = InProcess.ask
    broken = json.loads((nano_dir / "questions" / "new.jsonl").read_text().splitlines()[1])["question"]

    async def ask(self: InProcess, strategy: str, question: str) -> dict[str, Any]:
        asked.append((strategy, question))
        if question == broken and strategy == "rag":
            raise RuntimeError("the engine fell over")
        return await real_ask(self, strategy, question)

    monkeypatch.setattr(InProcess, "ask", ask)
    args = ["--questions", str(nano_dir / "questions" / "new.jsonl"), "--strategies", "closed_book,rag"]
    assert run(*args, "--run-id", "r2") == 0
    results = Path(home, "reports", "r2", "results.jsonl")
    first = read_results(results)
    assert len(first) == 10 and len(asked) == 10
    failed = [r for r in first if r.error]
    assert len(failed) == 1 and "the engine fell over" in (failed[0].error or "")
    assert json.loads(results.with_name("summary.json").read_text())["strategies"]["rag"]["errors"] == 1

    # Interrupt: keep 6 rows and a torn seventh, as a kill mid-write leaves them.
    lines = results.read_text().splitlines(keepends=True)
    kept = [ResultRow.model_validate_json(line) for line in lines[:6]]
    results.write_text("".join(lines[:6]) + lines[6][:40])
    asked.clear()
    monkeypatch.setattr(InProcess, "ask", lambda self, s, q: ask_ok(self, s, q, asked, real_ask))
    assert run(*args, "--run-id", "r2", "--resume") == 0

    rows = read_results(results)
    keys = [(r.question_id, r.strategy) for r in rows]
    assert len(keys) == len(set(keys)) == 10  # no duplicates, nothing missing
    assert not [r for r in rows if r.error]  # the failed answer was asked again
    done_before = {(r.question, r.strategy) for r in kept if r.error is None}
    assert len(asked) == 10 - len(done_before)
    assert not done_before & {(q, s) for s, q in asked}


def test_a_resumed_run_asks_again_what_another_checkpoint_answered(
    home: Path, nano_dir: Path, nano_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--questions", str(nano_dir / "questions" / "new.jsonl"), "--strategies", "closed_book"]
    assert run(*args, "--run-id", "r5", "--limit", "2") == 0
    retrained = copy_checkpoint(nano_model, tmp_path / "rl", phase="rl", tag="nano-rl")
    monkeypatch.setenv("KC_MODEL", str(retrained))
    assert run(*args, "--run-id", "r5", "--limit", "2", "--resume") == 0
    rows = read_results(home / "reports" / "r5" / "results.jsonl")
    assert [r.checkpoint_id for r in rows] == ["rl/nano-rl", "rl/nano-rl"]


async def ask_ok(self: InProcess, strategy: str, question: str, asked: list[Any], real: Any) -> Any:
    asked.append((strategy, question))
    return await real(self, strategy, question)


def test_a_run_id_is_not_overwritten_and_unavailable_strategies_are_skipped(
    home: Path, nano_dir: Path, capsys: Any
) -> None:
    args = ["--questions", str(nano_dir / "questions" / "new.jsonl"), "--strategies", "closed_book,cpt"]
    assert run(*args, "--run-id", "r3", "--limit", "1") == 0
    assert "skipped cpt: no CPT checkpoint configured" in capsys.readouterr().out
    summary = json.loads((home / "reports/r3/summary.json").read_text())
    assert list(summary["strategies"]) == ["closed_book"] and "cpt" in summary["skipped"]
    assert run(*args, "--run-id", "r3") == 2
    assert "pass --resume" in capsys.readouterr().err


def test_a_reference_run_appears_beside_this_runs_strategies(home: Path, nano_dir: Path, capsys: Any) -> None:
    new = str(nano_dir / "questions" / "new.jsonl")
    assert run("--questions", new, "--strategies", "closed_book", "--run-id", "ref", "--limit", "2") == 0
    # This run asks one question: the reference's answer to the other one stays out of its report.
    assert run("--questions", new, "--strategies", "rag", "--run-id", "main", "--limit", "1",
               "--references", "ref=θ0") == 0  # fmt: skip
    summary = json.loads((home / "reports/main/summary.json").read_text())
    assert list(summary["strategies"]) == ["rag", "closed_book (θ0)"]
    assert summary["strategies"]["closed_book (θ0)"]["accuracy"]["n"] == 1
    assert summary["references"]["θ0"]["answers"] == 1
    assert "closed_book (θ0)" in (home / "reports/main/report.md").read_text()
    assert "closed_book (θ0)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.integration
def test_http_mode_against_a_live_gateway(
    home: Path, nano_dir: Path, nano_model: Path, tmp_path: Path
) -> None:
    gateway = LiveGateway({"KC_HOME": str(home), "KC_MODEL": str(nano_model)}, tmp_path / "gw.log")
    try:
        gateway.wait_ready()
        code = run(
            "--questions", str(nano_dir / "questions" / "updated.jsonl"), "--gateway", gateway.url,
            "--run-id", "h1", "--concurrency", "8",
        )  # fmt: skip
    finally:
        gateway.stop()
    assert code == 0
    summary = json.loads((home / "reports/h1/summary.json").read_text())
    assert summary["mode"] == "http" and summary["gateway"] == gateway.url
    assert summary["checkpoint_id"] == "sft/nano-service" and summary["index_version"] == 1
    assert set(summary["strategies"]) == {"closed_book", "rag", "naive_rag", "long_context", "auto", "oracle"}
    assert "cpt" in summary["skipped"]
    rows = read_results(home / "reports/h1/results.jsonl")
    assert len(rows) == 5 * 5 and not [r for r in rows if r.error]
    assert all(r.route for r in rows if r.strategy == "auto")  # /ask's route, kept in the results
    assert all(r.retrieved for r in rows if r.strategy == "naive_rag")  # the local index, same KC_HOME
    assert all(r.recall_at_k is not None for r in rows if r.strategy == "rag")
    assert all(r.checkpoint_id == "sft/nano-service" for r in rows)


def _rows(correct: dict[str, list[bool]]) -> list[ResultRow]:
    return [
        ResultRow(
            question_id=f"new-{i}", category="new", question=f"Q{i}?", strategy=strategy,
            answer="yes" if ok else "no", correct=ok, exact_match=ok, f1=float(ok), abstained=False,
            stale=False, answers=["yes"],
            prompt_tokens=10, completion_tokens=2, generate_ms=5.0,
        )
        for strategy, oks in correct.items()
        for i, ok in enumerate(oks)
    ]  # fmt: skip


def test_compare_two_runs(kc_home: Path, capsys: Any) -> None:
    for run_id, oks in (("a", [False] * 18 + [True] * 2), ("b", [True] * 18 + [False] * 2)):
        run_dir = kc_home / "reports" / run_id
        run_dir.mkdir(parents=True)
        rows = _rows({"rag": oks, "closed_book": [False] * 20})
        (run_dir / "results.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
        write_report(run_dir, rows, {"run_id": run_id, "model": "m"})
    assert main(["compare", "a", str(kc_home / "reports" / "b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    acc = next(c for c in result["changes"] if c["strategy"] == "rag" and c["metric"] == "accuracy")
    assert acc["a"] == 0.1 and acc["b"] == 0.9 and acc["delta"] == 0.8 and acc["ci_overlap"] is False
    cb = next(c for c in result["changes"] if c["strategy"] == "closed_book" and c["metric"] == "accuracy")
    assert cb["delta"] == 0 and cb["ci_overlap"] is True
    assert result["common_answers"] == 40
    flips = {f["question_id"]: f["now"] for f in result["flips"]}
    assert all(f["strategy"] == "rag" for f in result["flips"])
    assert flips == {**{f"new-{i}": "right" for i in range(18)}, "new-18": "wrong", "new-19": "wrong"}
    assert main(["compare", "a", "b"]) == 0
    text = capsys.readouterr().out
    assert "| rag | accuracy | 0.1 | 0.9 | +0.800 | NO |" in text
    assert "20 answers flipped of 40 in both runs: 18 wrong -> right, 2 right -> wrong" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--questions", "/does/not/exist"], "does not exist"),
        (["run", "--questions", "{q}", "--strategies", "rag,oracle"], "unknown strategy oracle"),
        (["run", "--questions", "{q}", "--gateway", "http://127.0.0.1:9"], "unreachable"),
        (["run", "--questions", "{q}", "--gateway", "localhost:8000"], "must start with http"),
        (["run", "--questions", "{q}", "--resume"], "--resume needs the --run-id"),
        (["run", "--questions", "{q}", "--model", "/no/model"], "not a model directory"),
        (["compare", "nope", "nada"], "no summary.json"),
        (["run", "--questions", "{q}", "--references", "r0"], "give RUN=LABEL"),
        (["run", "--questions", "{q}", "--references", "nope=θ0"], "no results.jsonl in nope"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, nano_dir: Path, capsys: Any) -> None:
    argv = [a.replace("{q}", str(nano_dir / "questions")) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_scoring_an_answer_recall_and_answer_position() -> None:
    from eval.questions import Question
    from eval.runner import score

    q = Question(
        id="multi_hop-1", question="Where?", answers=["Stoudo"], category="multi_hop",
        supporting_doc_ids=["post-2", "pre-9"],
    )  # fmt: skip

    def src(n: int, source: str) -> dict[str, Any]:
        return {"n": n, "doc_id": source, "source": source, "title": "t", "date": "2025-02-01", "text": "x"}

    sources = [src(1, "post-1"), src(2, "post-1"), src(3, "post-2"), src(4, "post-3")]
    answer = {
        "text": "Stoudo [3]", "abstained": False, "citations": [sources[2]], "sources": sources,
        "usage": {"prompt_tokens": 100, "completion_tokens": 3},
        "latency": {"retrieve_ms": 2, "generate_ms": 9},
    }  # fmt: skip
    row = score(q, "rag", answer, indexed={"post-1", "post-2", "post-3"})
    assert row.correct and row.exact_match and row.citations[0]["source"] == "post-2"
    assert row.recall_at_k == 1.0  # pre-9 was never ingested: it does not count
    assert row.retrieved == ["post-1", "post-2", "post-3"] and row.total_ms == 11
    assert score(q, "rag", answer, indexed=None).recall_at_k == 0.5  # unknown index: every supporting doc
    packed = {**answer, "text": "Varn", "coverage": {"fraction": 0.5, "documents_packed": 3}}
    lc = score(q, "long_context", packed, indexed={"post-1", "post-2", "post-3"})
    assert not lc.correct and lc.recall_at_k is None and lc.coverage == 0.5 and lc.docs_in_window == 3
    assert lc.answer_in_window and lc.answer_position == 0.5  # the 2nd of 3 documents


def test_limit_samples_each_file_evenly_so_every_category_keeps_its_share() -> None:
    from eval.questions import Question, QuestionFile

    cats = ["new"] * 6 + ["retained"] * 3 + ["unanswerable"] * 3  # one file, listed by category
    pages = [Question(id=f"p{i}", question="?", answers=["a"], category=c) for i, c in enumerate(cats)]
    world = [Question(id=f"w{i}", question="?", answers=["a"], category="new") for i in range(2)]
    files = [QuestionFile(path=p, sha256="", questions=n) for p, n in (("pages", 12), ("w", 2))]
    picked = _limit_per_file(pages + world, files, 4)
    assert [q.id for q in picked] == ["p0", "p3", "p6", "p9", "w0", "w1"]
    assert [q.category for q in picked[:4]] == ["new", "new", "retained", "unanswerable"]
    assert [q.id for q in _limit_per_file(pages, files[:1], 1)] == ["p0"]


def test_cpt_training_seconds_come_from_lineage_through_a_merge(tmp_path: Path) -> None:
    from eval.runner import cpt_train_seconds

    cpt, merged, sft = tmp_path / "cpt", tmp_path / "merged", tmp_path / "sft"
    for path, lineage in (
        (cpt, {"phase": "cpt", "parent": str(sft), "metrics": {"elapsed_s": 612.5, "loss": 1.2}}),
        (merged, {"phase": "merged", "parent": str(cpt), "metrics": {"alpha": 1.0}}),
        (sft, {"phase": "sft", "parent": None, "metrics": {"train_seconds": 99.0}}),
    ):
        path.mkdir()
        (path / "lineage.json").write_text(json.dumps(lineage))
    assert cpt_train_seconds(str(cpt)) == 612.5
    assert cpt_train_seconds(str(merged)) == 612.5  # the merge's own lineage has no training time
    (cpt / "lineage.json").write_text(json.dumps({"phase": "cpt", "parent": str(sft), "metrics": {}}))
    assert cpt_train_seconds(str(merged)) is None  # never the SFT parent's time
    assert cpt_train_seconds(None) is None and cpt_train_seconds(str(tmp_path / "missing")) is None
