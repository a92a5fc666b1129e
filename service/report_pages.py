"""The eval reports as people read them: one renderer for `report.html` (written by `python -m eval run`)
and the gateway's `GET /reports` and `GET /reports/{run_id}` (service/routes/web.py).

Everything is drawn from what a run leaves in `$KC_HOME/reports/<run_id>/`: summary.json (the tables, the
plots) and results.jsonl (the failures, long context's answer positions). The tables are built once as
cells (service/report_tables.py) and written as Markdown (report.md, the CLI) or HTML (here); the plots
are service/report_plots.py's. The pages are static: no script, the plots inline, so that report.html
opens from disk and the gateway can serve them as they are.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.errors import APIError, NotFound
from service.report_plots import CATEGORY_ORDER, report_figures
from service.report_tables import SUMMARY_NOTE, Table, category_table, fmt_rate, sections, summary_table
from service.security import path_under

__all__ = ["CATEGORY_ORDER", "SUMMARY_NOTE", "Table", "render_index", "render_report", "run_dir"]

FIGURES = {  # name -> (heading, what the plot shows in words: its alt text and caption)
    "accuracy_by_category": ("Accuracy by category, plotted", "Accuracy by strategy and question category "
                             "(the numbers: the tables above)."),
    "accuracy_vs_cost": ("Accuracy against cost", "Accuracy against tokens per answer (log scale), and "
                         "against the seconds it took once to absorb the new documents where recorded."),
    "long_context_position": ("Long context: where the answer was", "Long context's accuracy against the "
                              "position of the answer's document in the window."),
}  # fmt: skip
MAX_FAILURES = 200  # shown on the page; results.jsonl has them all
# A run id as a folder name: no separator, no leading dot, so that no id leaves $KC_HOME/reports.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class ReportUnreadable(APIError):
    """A report's files exist but cannot be read: the server's data is broken, not the request."""

    code = "report_unreadable"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _failure(row: dict[str, Any]) -> str:
    """One wrong answer: the question, the gold answer, what was said, and the passages in the prompt
    (results.jsonl keeps each passage's source; the cited ones also their title, date and number)."""
    cited = {c.get("source"): c for c in row.get("citations") or []}
    passages = []
    for src in row.get("retrieved") or []:
        c = cited.get(src)
        about = f" — {_e(c.get('title'))} ({_e(c.get('date'))}), cited as [{_e(c.get('n'))}]" if c else ""
        passages.append(f"<li><code>{_e(src)}</code>{about}</li>")
    marks = [m for m in ("abstained", "stale") if row.get(m)]
    label = f"Answer ({', '.join(marks)})" if marks else "Answer"
    parts = [
        f'<article class="failure"><h3>{_e(row.get("strategy"))} · {_e(row.get("category"))} · '
        f"<code>{_e(row.get('question_id'))}</code></h3>",
        f"<p><strong>Question:</strong> {_e(row.get('question'))}</p>",
        f"<p><strong>Gold:</strong> {_e(' | '.join(row.get('answers') or [])) or '–'}</p>",
        f"<p><strong>{label}:</strong> {_e(row.get('answer') or '') or '<em>(empty)</em>'}</p>",
    ]
    if row.get("error"):
        parts.append(f"<p><strong>Error:</strong> {_e(row['error'])}</p>")
    if passages:
        parts.append(f"<p>Passages in the prompt, in order:</p><ol>{''.join(passages)}</ol>")
    else:
        parts.append("<p>No passages in the prompt.</p>")
    return "".join(parts) + "</article>"


def _failures(rows: Sequence[dict[str, Any]]) -> str:
    wrong = [r for r in rows if not r.get("correct") and r.get("variant") is None]
    rank = {c: i for i, c in enumerate(CATEGORY_ORDER)}
    wrong.sort(key=lambda r: (rank.get(r.get("category", ""), len(rank)), str(r.get("question_id")),
                              str(r.get("strategy"))))  # fmt: skip
    if not wrong:
        return (
            "<p>No wrong answers in results.jsonl.</p>" if rows else "<p>This run has no results.jsonl.</p>"
        )
    more = len(wrong) - MAX_FAILURES
    tail = f"<p>{more} more in results.jsonl.</p>" if more > 0 else ""
    return (
        f"<p>{len(wrong)} wrong answers of {len(rows)}; an abstention on an answerable question counts as "
        "wrong.</p>" + "".join(_failure(r) for r in wrong[:MAX_FAILURES]) + tail
    )


REPORT_CSS = (
    ".report{font-family:system-ui,sans-serif;max-width:1280px;margin:1em auto;padding:0 1em;color:#1a1a1a;"
    "line-height:1.4}.report table{border-collapse:collapse;font-size:13px}.report td,.report th{border:1px "
    "solid #999;padding:4px 8px;text-align:left}.report .scroll{overflow-x:auto}.report img{max-width:100%}"
    ".report .failure{border-left:4px solid #777;padding-left:.8em;margin:1em 0}.report h3{font-size:1em}"
    ".report nav a{margin-right:1em}"
)


def _document(title: str, body: str, nav: bool) -> str:
    links = (
        '<nav aria-label="Pages"><a href="/">Ask</a><a href="/reports">All reports</a></nav>' if nav else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{REPORT_CSS}</style></head>"
        f'<body><main class="report">{links}{body}</main></body></html>'
    )


def render_report(
    full: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    *,
    extra: Sequence[tuple[str, Table, str]] = (),
    nav: bool = False,
) -> str:
    """One run as a static HTML page, from summary.json's content (`full`) and results.jsonl's rows.

    `extra`: sections after the failures, as (heading, table, note); `nav`: links to the gateway's pages."""
    title = f"keepcurrent eval — {full.get('run_id', '?')}"
    summary = full.get("strategies") or {}
    questions = len({r.get("question_id") for r in rows}) if rows else full.get("questions", "?")
    meta = [
        f"Model <code>{_e(full.get('model', '?'))}</code>",
        f"index version {_e(full.get('index_version', '?'))}",
        f"{_e(questions)} questions",
        _e(full.get("mode", "in-process")),
    ]
    meta += [_e(full["created_at"])] if full.get("created_at") else []
    meta += [f"code {_e(full['code_version'])}"] if full.get("code_version") else []
    body = [f"<h1>{_e(title)}</h1><p>{' · '.join(meta)}</p>"]
    if summary:
        body.append(f"<h2>Summary</h2>{summary_table(summary).html()}<p>{_e(SUMMARY_NOTE)}</p>")
        body += [
            f"<p>skipped <code>{_e(k)}</code>: {_e(v)}</p>" for k, v in (full.get("skipped") or {}).items()
        ]
        body.append(f"<h2>Accuracy by category [95% CI]</h2>{category_table(summary).html()}")
        body += [f"<h2>{_e(h)}</h2>{t.html()}<p>{_e(n)}</p>" for h, t, n in sections(full)]
    else:
        body.append("<p>This run's summary holds no strategy.</p>")
    for name, png in report_figures(full, rows).items():
        heading, text = FIGURES.get(name, (name, name))
        body.append(
            f'<h2>{_e(heading)}</h2><figure><img alt="{_e(text)}" '
            f'src="data:image/png;base64,{png}"/><figcaption>{_e(text)}</figcaption></figure>'
        )
    body.append(f"<h2>Failures</h2>{_failures(rows)}")
    body += [f"<h2>{_e(h)}</h2><p>{_e(n)}</p>{t.html()}" for h, t, n in extra]
    return _document(title, "".join(body), nav)


# --- the runs under $KC_HOME/reports (the gateway's pages) ---


def run_dir(reports: Path, run_id: str) -> Path:
    """The folder of run `run_id`, with its summary.json; 404 for an id that is not a folder name or has no
    finished report. The resolved folder must lie inside `reports` (a symlink out of it is refused too)."""
    if not RUN_ID.fullmatch(run_id):
        raise NotFound(
            f"{run_id[:80]!r} is not a run id: letters, digits, '.', '_' and '-', starting with a letter "
            "or digit (GET /reports lists the runs)",
            code="run_not_found",
        )
    folder = path_under(reports, run_id, what="run")  # symbolic links followed: still under reports/
    if not folder.is_dir():
        raise NotFound(
            f"no run {run_id!r} under $KC_HOME/reports (GET /reports lists the runs)", code="run_not_found"
        )
    if not (folder / "summary.json").is_file():
        raise NotFound(
            f"run {run_id!r} has no summary.json yet: it is still running or was interrupted "
            f"(python -m eval run --run-id {run_id} --resume finishes it)",
            code="run_not_found",
        )
    return folder


def read_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """summary.json's content and results.jsonl's rows (none without the file; a torn last line, from a
    run killed mid-write, dropped as eval.runner.read_results does)."""
    try:
        full = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportUnreadable(f"{folder.name}/summary.json cannot be read: {e}") from e
    if not isinstance(full, dict):
        raise ReportUnreadable(f"{folder.name}/summary.json is not a JSON object")
    results = folder / "results.jsonl"
    rows: list[dict[str, Any]] = []
    lines = results.read_text(encoding="utf-8").splitlines() if results.is_file() else []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            if n < len(lines):
                raise ReportUnreadable(f"{folder.name}/results.jsonl:{n}: not valid JSON") from e
    return full, rows


def list_runs(reports: Path) -> list[dict[str, Any]]:
    """Each run folder that `run_dir` would serve (a usable id, inside `reports` once resolved): its id,
    when, model, questions and accuracy per strategy, newest first; `state` says why a run has no page
    (unfinished, unreadable summary)."""
    runs = []
    inside = reports.resolve()
    for folder in sorted(reports.iterdir()) if reports.is_dir() else []:
        if not RUN_ID.fullmatch(folder.name) or not folder.is_dir():
            continue
        if not folder.resolve().is_relative_to(inside):  # a link out of reports/: not a run of this home
            continue
        run: dict[str, Any] = {"run_id": folder.name, "state": "ok", "created_at": "", "strategies": {}}
        if not (folder / "summary.json").is_file():
            run["state"] = "no summary.json yet (running or interrupted)"
        else:
            try:
                full = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
                run["created_at"] = str(full.get("created_at") or "")
                run["model"], run["questions"] = full.get("model"), full.get("questions")
                run["strategies"] = full.get("strategies") or {}
            except (OSError, ValueError, AttributeError) as e:
                run["state"] = f"summary.json unreadable ({type(e).__name__})"
        runs.append(run)
    return sorted(runs, key=lambda r: (r["created_at"], r["run_id"]), reverse=True)


def render_index(runs: Sequence[dict[str, Any]]) -> str:
    """The list of runs as a page: a table with a link to each finished run and its accuracies."""
    rows = []
    for r in runs:
        name = _e(r["run_id"])
        link = f'<a href="/reports/{name}">{name}</a>' if r["state"] == "ok" else f"{name} ({_e(r['state'])})"
        accuracy = "; ".join(f"{_e(s)} {_e(fmt_rate(v.get('accuracy')))}" for s, v in r["strategies"].items())
        cells = [link, _e(r["created_at"] or "–"), f"<code>{_e(r.get('model') or '–')}</code>",
                 _e(r.get("questions") or "–"), accuracy or "–"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = (
        '<div class="scroll"><table><thead><tr><th>run</th><th>created</th><th>model</th><th>questions</th>'
        f"<th>accuracy [95% CI]</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    body = (
        "<h1>Eval reports</h1><p>Runs of <code>python -m eval run</code> under "
        "<code>$KC_HOME/reports</code>, newest first.</p>"
        + (table if rows else "<p>No runs yet: <code>python -m eval run</code> writes them.</p>")
    )
    return _document("keepcurrent eval reports", body, nav=True)
