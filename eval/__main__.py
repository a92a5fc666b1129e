"""The eval command line. Results go to stdout (`--json` for scripts), logs to stderr.

    python -m eval world --seed 0 --size tiny --out data/world [--paraphrases K] [--json]
    python -m eval contamination --questions data/world/questions --corpus data/world/sft [--n 13] [--json]
    python -m eval run --questions data/world/questions [--strategies closed_book,rag,naive_rag,...]
        [--gateway URL | --model DIR_OR_TAG] [--concurrency N] [--limit N] [--run-id ID] [--resume] [--json]
    python -m eval compare RUN_A RUN_B [--json]
    python -m eval whatsnew-rows --pages data/python-docs/whatsnew-pre --out DIR [--seed 0] [--json]

Each subcommand is an `add_<name>_parser(subparsers)` and a `cmd_<name>(args) -> exit code`; a new one is
added by writing both and listing the first in `make_parser()`. Exit codes: 0 success, 1 the check
failed (contamination found), 2 bad arguments or unreadable input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from core.config_flags import add_config_args, config_from_args
from core.logging import setup_logging
from eval.contamination import check_contamination, format_report
from eval.run_config import RunConfig
from eval.world import WorldConfig, generate_world, manifest_summary, write_world

# Not __name__: run as `python -m eval`, that would be "__main__".
logger = logging.getLogger("eval")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# -- world -------------------------------------------------------------------------------------------


def add_world_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "world",
        help="generate the synthetic world: documents before/after the cutoff, questions, training data",
        description="Generate the synthetic world with a knowledge cutoff into --out.",
    )
    add_config_args(p, WorldConfig)
    p.add_argument(
        "--out", type=Path, required=True, help="output directory (created; a previous world is replaced)"
    )
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    p.set_defaults(func=cmd_world)


def cmd_world(args: argparse.Namespace) -> int:
    config = config_from_args(WorldConfig, args)
    started = time.perf_counter()
    manifest = write_world(generate_world(config), args.out)
    summary = {
        "out": str(args.out),
        **manifest_summary(manifest),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_world_summary(summary))
    return EXIT_OK


def format_world_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    cfg = summary["config"]

    def row(label: str, values: dict[str, Any]) -> str:
        return f"  {label:<13}" + ", ".join(f"{k} {v}" for k, v in values.items())

    entities = {k: f"{v['train'] + v['eval']} ({v['train']}/{v['eval']})" for k, v in c["entities"].items()}
    lines = [
        f"world seed {cfg['seed']}, size {cfg['size']}, paraphrases {cfg['paraphrases']}, "
        f"cutoff {summary['cutoff']}, as of {summary['as_of']} -> {summary['out']}",
        row("entities", entities) + "   (train/eval)",
        row("facts", c["facts"]),
        row("documents", c["documents"])
        + f"   ({c['words']['corpus_pre']} + {c['words']['docs_post']} words)",
        row("questions", c["questions"]),
        row("sft", c["sft"]),
        row("rl", c["rl"]),
        row("prefs", c["prefs"]),
        f"  {'sha256':<13}{summary['world_sha256']}",
        f"  {'seconds':<13}{summary['seconds']}",
    ]
    return "\n".join(lines)


# -- contamination -----------------------------------------------------------------------------------


def add_contamination_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "contamination",
        help="n-gram overlap between eval questions (with answers) and a training corpus",
        description="Report eval questions whose text (question + answer) shares an n-gram with a corpus. "
        "Exit 1 when any question is contaminated.",
    )
    p.add_argument(
        "--questions", type=Path, nargs="+", required=True, help="question .jsonl files, or folders of them"
    )
    p.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        required=True,
        help="training data: .jsonl/.json/.md/.txt files or folders",
    )
    p.add_argument(
        "--n", type=int, default=13, help="n-gram length in words (shorter questions: the whole text)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_contamination)


def cmd_contamination(args: argparse.Namespace) -> int:
    report = check_contamination(args.questions, args.corpus, n=args.n)
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return EXIT_FAILED if report.contaminated else EXIT_OK


# -- run ---------------------------------------------------------------------------------------------


def add_run_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="ask the questions with every strategy and write the side-by-side report",
        description="Ask every question with every strategy (in-process, or a gateway over HTTP), score "
        "the answers and write $KC_HOME/reports/<run-id>/{report.md, report.html, results.jsonl, "
        "summary.json}. Settings (model, index, engine) come from KC_* variables, as for the gateway.",
    )
    add_config_args(p, RunConfig)
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from eval.report import cost_table, markdown_table
    from eval.runner import default_run_id, run_eval

    config = config_from_args(RunConfig, args)
    config.validate()
    config.run_id = config.run_id or default_run_id()
    try:
        run_dir, summary = asyncio.run(run_eval(config))
    except KeyboardInterrupt:
        print(
            f"python -m eval run: interrupted; the finished answers are kept: continue with "
            f"--run-id {config.run_id} --resume",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return EXIT_OK
    print(markdown_table(summary["strategies"]))
    if summary["costs"]:
        print()
        print(cost_table(summary["strategies"], summary["costs"]))
    if summary.get("injection"):
        from eval.hostile import injection_table

        print("\ninjection-following rate on the hostile questions (lower is better):")
        print(injection_table(summary["injection"]))
    for name, why in summary["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"\nreport: {run_dir / 'report.html'}")
    return EXIT_OK


# -- compare -----------------------------------------------------------------------------------------


def add_compare_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="what changed between two eval runs",
        description="Per strategy and metric: A, B, the delta and whether the 95% CIs overlap; then the "
        "questions that flipped between right and wrong.",
    )
    p.add_argument("run_a", help="run id (under $KC_HOME/reports) or report folder")
    p.add_argument("run_b", help="run id (under $KC_HOME/reports) or report folder")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from eval.compare import compare_runs, format_comparison, resolve_run

    result = compare_runs(resolve_run(args.run_a), resolve_run(args.run_b))
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return EXIT_OK


# -- whatsnew-rows ----------------------------------------------------------------------------------


def add_whatsnew_parser(subparsers: Any) -> None:
    from eval.whatsnew import WhatsNewConfig

    p = subparsers.add_parser(
        "whatsnew-rows",
        help='SFT and RL reading rows from the pre-cutoff Python "What\'s New" pages',
        description="Write DIR/sft/{reading,distractor,abstain}.jsonl, DIR/rl/grounded.jsonl and "
        "DIR/manifest.json: grounded questions about the pages, none overlapping an eval question.",
    )
    add_config_args(p, WhatsNewConfig)
    p.add_argument(
        "--out", type=Path, required=True, help="output directory (created; earlier rows replaced)"
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_whatsnew)


def cmd_whatsnew(args: argparse.Namespace) -> int:
    from eval.whatsnew import WhatsNewConfig, format_summary, run

    summary = run(config_from_args(WhatsNewConfig, args), args.out)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=None, help="logging level (default: $KC_LOG_LEVEL or INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_world_parser(subparsers)
    add_contamination_parser(subparsers)
    add_run_parser(subparsers)
    add_compare_parser(subparsers)
    add_whatsnew_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level)
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        # Bad input is the user's to fix: one line that names it; the traceback only at DEBUG level.
        logger.debug("%s failed", args.command, exc_info=True)
        print(f"python -m eval {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
