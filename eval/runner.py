"""`python -m eval run`: ask every question with every strategy, score the answers, write the report.

    python -m eval run --questions data/world/questions --strategies closed_book,rag,naive_rag
    python -m eval run --questions data/world/questions --gateway http://127.0.0.1:8000 --run-id demo
    python -m eval run --questions data/world/questions --run-id demo --resume      # after an interruption

Results are appended to `$KC_HOME/reports/<run-id>/results.jsonl` as each answer finishes, so a run that
is killed loses at most the answers in flight; `--resume` asks only the (question, strategy) pairs that
have no row yet (rows that recorded an error are asked again). The report files are rebuilt from
results.jsonl at the end of every run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config_flags import to_jsonable
from core.settings import Settings
from eval.backends import Backend, Http, InProcess
from eval.hostile import append_to_report, injection_summary
from eval.metrics import recall_at_k, score_answer
from eval.oracle import frontier
from eval.questions import Question, QuestionFile, load_questions
from eval.report import ResultRow, write_report
from eval.run_config import RunConfig
from eval.systems import NAIVE_K

log = logging.getLogger(__name__)

RETRIEVAL = ("rag", "naive_rag")
CITATION_KEYS = ("n", "doc_id", "source", "title", "date", "chunk_id", "score")


# -- inputs ------------------------------------------------------------------------------------------


def resolve_model(spec: str, settings: Settings) -> Path:
    """A checkpoint directory, `phase/tag` under $KC_HOME/checkpoints, or a registered tag."""
    from core.registry import find_checkpoint

    for candidate in (Path(spec).expanduser(), settings.resolved_home / "checkpoints" / spec):
        if (candidate / "config.json").exists():
            return candidate.resolve()
    phase, _, tag = spec.rpartition("/")
    entry = find_checkpoint(settings.resolved_database_url, tag, phase or None)
    if entry is not None and (Path(entry.path) / "config.json").exists():
        return Path(entry.path)
    raise ValueError(
        f"--model {spec}: not a model directory (no config.json) nor a registered checkpoint "
        "(python -m trainer list)"
    )


def read_ingest_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    path = Path(value)
    try:
        return float(json.loads(path.read_text())["seconds"])
    except FileNotFoundError:
        raise ValueError(f"--ingest-seconds {value}: neither a number nor an existing file") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"--ingest-seconds {value}: not the JSON of `python -m indexer ingest --json` (no 'seconds')"
        ) from None


def cpt_train_seconds(model_path: str | None) -> float | None:
    """Training seconds from the CPT checkpoint's lineage.json metrics; for a chat-vector merge
    (`python -m trainer merge`, phase "merged"), from the CPT checkpoint it was merged from."""
    path = Path(model_path) if model_path else None
    for _ in range(3):
        if path is None:
            return None
        try:
            lineage = json.loads((path / "lineage.json").read_text())
        except (OSError, ValueError):
            return None
        metrics = lineage.get("metrics") or {}
        for key in ("train_seconds", "elapsed_s", "seconds", "wall_seconds"):
            if isinstance(metrics.get(key), int | float):
                return float(metrics[key])
        if lineage.get("phase") != "merged" or not lineage.get("parent"):
            return None
        path = Path(lineage["parent"])
    return None


def index_facts(settings: Settings) -> dict[str, Any]:
    """The local index's state (version, embedder, chunking) and the sources it holds; {} without one."""
    from sqlalchemy import select

    from core.db import DocumentRow, session_factory
    from indexer.pipeline import read_state

    try:
        with session_factory(settings.resolved_database_url)() as session:
            state = read_state(session)
            if state is None:
                return {}
            sources = set(session.scalars(select(DocumentRow.source)).all())
    except Exception as e:  # the index is optional (closed_book, cpt); say why it is not described
        log.warning("could not read the index state: %s: %s", type(e).__name__, e)
        return {}
    return {
        "version": state.version,
        "embedder": state.embedder,
        "faiss_index": state.faiss_index,
        "chunk_tokens": state.chunk_tokens,
        "chunk_overlap": state.chunk_overlap,
        "updated_at": state.updated_at.isoformat(),
        "documents": len(sources),
        "sources": sorted(sources),
    }


# -- scoring -----------------------------------------------------------------------------------------


def _doc_order(sources: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(s["source"] for s in sources))


def score(
    q: Question, strategy: str, answer: dict[str, Any], indexed: set[str] | None, variant: str | None = None
) -> ResultRow:
    """One results row from a gateway answer (the JSON of service.api_schemas.Answer)."""
    text = answer["text"]
    s = score_answer(text, q.answers, q.category, q.stale_answers)
    sources = answer.get("sources") or []
    # Recall counts only supporting documents the index holds (multi_hop and retained questions also
    # cite pre-cutoff documents that were never ingested); no such document: no recall.
    relevant = [d for d in q.supporting_doc_ids if indexed is None or d in indexed]
    retrieved = _doc_order(sources)
    row: dict[str, Any] = {}
    if strategy in RETRIEVAL:
        row["recall_at_k"] = recall_at_k(retrieved, relevant, max(len(sources), 1))
    coverage = answer.get("coverage")
    if coverage:
        row["coverage"] = coverage["fraction"]
        row["docs_in_window"] = coverage["documents_packed"]
        if relevant:
            at = next((i for i, d in enumerate(retrieved) if d in relevant), None)
            row["answer_in_window"] = at is not None
            if at is not None:
                row["answer_position"] = round(at / max(len(retrieved) - 1, 1), 4)
    usage, latency = answer.get("usage") or {}, answer.get("latency") or {}
    return ResultRow(
        question_id=q.id, category=q.category, question=q.question, strategy=strategy, variant=variant,
        answer=text, correct=s.correct, exact_match=s.exact_match, f1=round(s.f1, 4),
        abstained=s.abstained or bool(answer.get("abstained")), stale=s.stale, answers=q.answers,
        citations=[{k: c.get(k) for k in CITATION_KEYS} for c in answer.get("citations") or []],
        retrieved=retrieved, prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0), retrieve_ms=latency.get("retrieve_ms", 0.0),
        generate_ms=latency.get("generate_ms", 0.0), checkpoint_id=answer.get("checkpoint_id"),
        abstain_reason=answer.get("abstain_reason"), model_text=answer.get("model_text"),
        route=answer.get("route"), **row,
    )  # fmt: skip


def error_row(q: Question, strategy: str, variant: str | None, error: BaseException) -> ResultRow:
    return ResultRow(
        question_id=q.id, category=q.category, question=q.question, strategy=strategy, variant=variant,
        answer="", correct=False, exact_match=False, f1=0.0, abstained=False, stale=False, answers=q.answers,
        error=f"{type(error).__name__}: {error}",
    )  # fmt: skip


# -- results file ------------------------------------------------------------------------------------

Key = tuple[str, str, str | None]


def row_key(row: ResultRow) -> Key:
    return (row.question_id, row.strategy, row.variant)


def read_results(path: Path) -> list[ResultRow]:
    """The rows of results.jsonl; a torn last line (the run was killed mid-write) is dropped."""
    if not path.exists():
        return []
    rows: list[ResultRow] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(ResultRow.model_validate_json(line))
        except ValueError:
            if n == len(lines):
                log.warning("%s:%d: dropping a torn last line (the run was interrupted)", path, n)
                continue
            raise ValueError(f"{path}:{n}: not a results row") from None
    return rows


def latest_rows(rows: list[ResultRow]) -> list[ResultRow]:
    """One row per key, the last written (a retried error is replaced by its answer)."""
    return list({row_key(r): r for r in rows}.values())


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Task:
    question: Question
    strategy: str
    variant: str | None = None
    placement: tuple[int, float] | None = None


def _variant(n: int, position: float) -> str:
    return f"n={n},pos={position:g}"


def _same_model(row: ResultRow, backend: Backend) -> bool:
    """Whether a resumed row was answered by the checkpoint that now serves its strategy (a retrained
    model makes the old answers another run's)."""
    served = backend.info.get("cpt_checkpoint_id" if row.strategy == "cpt" else "checkpoint_id")
    return row.checkpoint_id in (None, served)


def plan_tasks(
    questions: list[Question], strategies: list[str], sweep: list[tuple[int, float]], indexed: set[str]
) -> list[Task]:
    tasks = [Task(q, s) for q in questions for s in strategies]
    swept = [q for q in questions if any(d in indexed for d in q.supporting_doc_ids)]
    tasks += [Task(q, "long_context", _variant(n, p), (n, p)) for n, p in sweep for q in swept]
    return tasks


def code_version() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def default_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")


def _make_backend(cfg: RunConfig) -> Backend:
    from service.settings import ServiceSettings

    overrides: dict[str, Any] = {}
    if cfg.model:
        overrides["model"] = resolve_model(cfg.model, ServiceSettings())
    settings = ServiceSettings(**overrides)
    if cfg.gateway:
        return Http(cfg.gateway, settings, cfg.max_tokens)
    return InProcess(settings, cfg.max_tokens)


async def _ask_all(
    backend: Backend, tasks: list[Task], indexed: set[str] | None, out: Path, concurrency: int
) -> int:
    """Ask every task, `concurrency` at a time, appending each scored row to `out`; returns errors."""
    from tqdm import tqdm

    sem = asyncio.Semaphore(concurrency)
    errors = 0
    bar = tqdm(total=len(tasks), desc="eval", unit="answer", file=sys.stderr, dynamic_ncols=True)

    async def one(task: Task, fh: Any) -> None:
        nonlocal errors
        async with sem:
            q = task.question
            try:
                if task.placement is not None:
                    answer = await backend.ask_placed(task.placement, q.question)
                else:
                    answer = await backend.ask(task.strategy, q.question)
                row = score(q, task.strategy, answer, indexed, task.variant)
            except Exception as e:  # one failed answer is a row with its error, not a failed run
                log.debug("%s / %s failed", q.id, task.strategy, exc_info=True)
                row = error_row(q, task.strategy, task.variant, e)
                errors += 1
            fh.write(row.model_dump_json() + "\n")
            fh.flush()
            bar.update(1)

    try:
        with out.open("a", encoding="utf-8") as fh:
            await asyncio.gather(*(one(t, fh) for t in tasks))
    finally:
        bar.close()
    return errors


def absorb_costs(
    summary: dict[str, Any], ingest_seconds: float | None, cpt_seconds: float | None
) -> dict[str, dict[str, Any]]:
    """Per strategy: seconds spent once to absorb the new documents, prompt tokens paid per question,
    tokens per answer with the frontier and the distance to the best single strategy (eval.oracle), and
    for cpt the forgetting (closed_book's retained accuracy minus cpt's, same run)."""
    once = {
        "closed_book": (0.0, "nothing is absorbed"),
        "long_context": (0.0, "nothing once; every question pays in prompt tokens"),
        "rag": (ingest_seconds, "ingest (--ingest-seconds)"),
        "naive_rag": (ingest_seconds, "ingest, the same index as rag"),
        "cpt": (cpt_seconds, "CPT training (lineage.json metrics)"),
        "auto": (ingest_seconds, "ingest, the same index as rag"),
        "oracle": (None, "a ceiling: the cheapest right strategy per question, known after the fact"),
    }
    front = frontier(summary)
    out: dict[str, dict[str, Any]] = {}
    for name, s in summary.items():
        seconds, how = once.get(name.split(" (")[0], (None, ""))  # a reference row: "rag (θ0)"
        out[name] = {
            "absorb_seconds": seconds,
            "how": how,
            "prompt_tokens": s["prompt_tokens"],
            **front[name],
        }
    retained = {n: s["by_category"].get("retained") for n, s in summary.items()}
    if retained.get("cpt") and retained.get("closed_book"):
        out["cpt"]["forgetting_retained"] = round(
            retained["closed_book"]["value"] - retained["cpt"]["value"], 4
        )
    return out


async def run_eval(cfg: RunConfig) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) the evaluation; returns the report folder and the summary."""
    cfg.validate()
    strategies = cfg.strategy_list()
    sweep = cfg.sweep()
    questions, files = load_questions(cfg.questions)
    if cfg.limit is not None:
        questions = _limit_per_file(questions, files, cfg.limit)
    ingest_seconds = read_ingest_seconds(cfg.ingest_seconds)
    settings = Settings()
    asked = {q.id for q in questions}
    references = {label: reference_rows(run, label, asked, settings) for run, label in cfg.reference_list()}
    run_id = cfg.run_id or default_run_id()
    run_dir = settings.resolved_home / "reports" / run_id
    results = run_dir / "results.jsonl"
    if results.exists() and not cfg.resume:
        raise ValueError(
            f"run {run_id} exists ({run_dir}): pass --resume to continue it, or another --run-id"
        )
    backend = _make_backend(cfg)
    try:
        await backend.start()
        index = await asyncio.to_thread(index_facts, backend.settings)
        indexed = set(index.get("sources", [])) or None
        if backend.mode == "http" and index.get("version") != backend.index_version:
            indexed = None  # the local index is not the gateway's: recall over every supporting doc
        skipped = {s: why for s in strategies if (why := backend.unavailable(s))}
        if sweep and not backend.supports_placement:
            log.warning("--lc-sweep runs in-process only: skipped over HTTP")
            sweep = []
        if sweep and "long_context" in skipped:
            sweep = []
        if isinstance(backend, InProcess):
            backend.gold = {q.question: set(q.supporting_doc_ids) for q in questions}
        run_dir.mkdir(parents=True, exist_ok=True)
        done = latest_rows(read_results(results))
        kept = [r for r in done if r.error is None and _same_model(r, backend)]
        if len(kept) < len([r for r in done if r.error is None]):
            log.warning("re-asking the answers of a checkpoint the gateway no longer serves")
        # Rewrite without the torn line, the errors and other checkpoints' answers: asked again.
        results.write_text("".join(r.model_dump_json() + "\n" for r in kept), encoding="utf-8")
        finished = {row_key(r) for r in kept}
        runnable = [s for s in strategies if s not in skipped]
        planned = plan_tasks(questions, runnable, sweep, indexed or set())
        planned_keys = {(t.question.id, t.strategy, t.variant) for t in planned}
        todo = [t for t in planned if (t.question.id, t.strategy, t.variant) not in finished]
        for name, why in skipped.items():
            log.warning("skipping %s: %s", name, why)
        log.info(
            "run %s: %d questions x %s (%s); %d answers to ask, %d already there",
            run_id, len(questions), ",".join(s for s in strategies if s not in skipped), backend.mode,
            len(todo), len(finished),
        )  # fmt: skip
        errors = await _ask_all(backend, todo, indexed, results, cfg.concurrency)
        if errors:
            log.warning("%d answers failed: see the `error` field in %s", errors, results)
    finally:
        await backend.aclose()
    # The report covers this run's plan: rows a resumed run no longer asks for stay in the file only.
    rows = [r for r in latest_rows(read_results(results)) if row_key(r) in planned_keys]
    meta = {
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": to_jsonable(cfg),
        **{k: v for k, v in backend.info.items()},
        "model": backend.info.get("model_path") or backend.info.get("checkpoint_id"),
        "index_version": backend.index_version if backend.index_version >= 0 else index.get("version"),
        "index": {k: v for k, v in index.items() if k != "sources"},
        "strategies_run": [s for s in strategies if s not in skipped],
        "skipped": skipped,
        "question_files": [f.model_dump() for f in files],
        "questions": len(questions),
        "lc_sweep": [list(x) for x in sweep],
        "max_tokens": backend.max_tokens,
        "settings": _settings_record(backend),
        "code_version": code_version(),
    }
    for label, (ref_dir, ref_rows) in references.items():
        rows += ref_rows
        meta.setdefault("references", {})[label] = {"run": str(ref_dir), "answers": len(ref_rows)}
    injection = injection_summary(rows, questions)
    if injection:
        meta["injection"] = injection
    summary = write_report(run_dir, rows, meta, costs=lambda s: absorb_costs(
        s, ingest_seconds, cpt_train_seconds(backend.info.get("cpt_model_path"))
    ))  # fmt: skip
    if injection:
        append_to_report(run_dir, injection)
    return run_dir, summary


def reference_rows(run: str, label: str, asked: set[str], settings: Settings) -> tuple[Path, list[ResultRow]]:
    """Another run's answers to the questions this run asked, each strategy renamed '<strategy> (LABEL)'
    so that the report shows them as rows of their own beside this run's (same questions, same scoring)."""
    for candidate in (Path(run).expanduser(), settings.resolved_home / "reports" / run):
        if (candidate / "results.jsonl").is_file():
            rows = latest_rows(read_results(candidate / "results.jsonl"))
            kept = [r.model_copy(update={"strategy": f"{r.strategy} ({label})"}) for r in rows
                    if r.question_id in asked and r.variant is None]  # fmt: skip
            return candidate, kept
    raise ValueError(f"--references {run}={label}: no results.jsonl in {run} or under $KC_HOME/reports")


def _settings_record(backend: Backend) -> dict[str, Any]:
    """The KC_* settings that shape the answers (in-process: what ran; over HTTP: this side's, for
    naive_rag and the max_tokens sent)."""
    keys = ("engine", "home", "model", "cpt_model", "embedder", "chunk_tokens", "rag_k", "rag_min_score",
            "rag_min_support", "max_prompt_tokens", "default_max_tokens", "max_batch_size", "auto_routes",
            "auto_cutoff", "auto_fallback_on_gate", "auto_lc_k", "auto_lc_margin_chars",
            "auto_lc_max_prompt_tokens")  # fmt: skip
    record = {k: to_jsonable(getattr(backend.settings, k)) for k in keys}
    record["home"] = str(backend.settings.resolved_home)
    record["naive_rag_k"] = NAIVE_K
    return record


def _limit_per_file(questions: list[Question], files: list[QuestionFile], limit: int) -> list[Question]:
    """`limit` questions of each file, spread evenly over it: a file that lists its questions by category
    (the Python pages' set: new, retained, unanswerable) keeps each category's share in the sample."""
    out: list[Question] = []
    start = 0
    for f in files:
        n, k = f.questions, min(limit, f.questions)
        out += [questions[start + i * n // k] for i in range(k)]
        start += n
    return out
