"""A quick exact-match probe of a checkpoint: greedy answers to questions, in the trainer's own process.

    python -m trainer evaluate --model sft/TAG --questions data/world/questions/retained.jsonl
    python -m trainer evaluate --model sft/TAG --questions data/world/questions/retained.jsonl \
        --docs data/world/corpus_pre          # grounded: a supporting document + distractors as passages
    python -m trainer evaluate --model sft/TAG --data held_out_chats.jsonl

Training phases use it to report accuracy against training time (and RL's reward-hacking guard can use
it for held-out accuracy); the eval harness (`python -m eval run`) is the full comparison of strategies.
Exact match is `core.answers.exact_match`, the eval's: the answer, normalised (citation, case,
punctuation, articles, thousands separators dropped), equals a normalised alias.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.answers import exact_match
from core.loaders import read_files
from core.prompts import Message, citations, closed_book_messages, grounded_messages


@dataclass(frozen=True)
class EvalConfig:
    """What `python -m trainer evaluate` asks, of which checkpoint."""

    model: str = field(
        default="", metadata={"help": "checkpoint directory or registered tag", "required": True}
    )
    questions: list[Path] = field(
        default_factory=list,
        metadata={"help": "question .jsonl files ({question, answers, supporting_doc_ids})", "nargs": "*",
                  "type": Path},
    )  # fmt: skip
    docs: Path | None = field(
        default=None,
        metadata={"help": "documents folder: ask --questions grounded, with passages from it", "type": Path},
    )
    data: list[Path] = field(
        default_factory=list,
        metadata={"help": "chat .jsonl rows; the last assistant turn is the reference", "nargs": "*",
                  "type": Path},
    )  # fmt: skip
    passages: int = field(
        default=3, metadata={"help": "passages per grounded question (1 gold + distractors)"}
    )
    limit: int | None = field(default=None, metadata={"help": "at most N items per file", "type": int})
    batch_size: int = field(default=32, metadata={"help": "prompts per generation batch"})
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per answer"})
    seed: int = field(default=0, metadata={"help": "seed of the distractor choice"})

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--model is required")
        if not self.questions and not self.data:
            raise ValueError("give --questions and/or --data")
        if self.passages < 1:
            raise ValueError("--passages must be at least 1")


@dataclass
class Item:
    messages: list[Message]
    answers: list[str]
    citation: int | None = None
    id: str = ""


def read_docs(folder: Path) -> dict[str, str]:
    """Document bodies (whitespace collapsed), read as the indexer reads the folder (`core.loaders`), by
    their `source` id (front matter or jsonl field; else the file stem, with `#id` for a jsonl row)."""
    docs: dict[str, str] = {}
    for read in read_files([folder]):
        for d in read.documents:
            key = d.source if d.source != d.uri else Path(d.path).stem + d.uri[len(d.path) :]
            docs[key] = " ".join(d.text.split())
    if not docs:
        raise ValueError(f"no documents under {folder}")
    return docs


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    return rows


def question_items(
    path: Path, docs: dict[str, str] | None, passages: int, rng: random.Random, limit: int | None
) -> tuple[list[Item], int]:
    """Items from a question file: closed book, or grounded when `docs` is given. Returns (items, skipped)."""
    items, skipped = [], 0
    doc_ids = sorted(docs) if docs else []
    for row in _jsonl(path)[:limit]:
        if "question" not in row or "answers" not in row:
            raise ValueError(f"{path}: question rows need `question` and `answers`")
        if docs is None:
            items.append(
                Item(closed_book_messages(row["question"]), list(row["answers"]), id=row.get("id", ""))
            )
            continue
        support = [d for d in row.get("supporting_doc_ids", []) if d in docs]
        if not support:
            skipped += 1
            continue
        gold = rng.choice(support)
        others = [d for d in doc_ids if d not in set(row.get("supporting_doc_ids", []))]
        chosen = rng.sample(others, min(passages - 1, len(others)))
        position = rng.randrange(len(chosen) + 1)
        chosen.insert(position, gold)
        messages = grounded_messages(row["question"], [docs[d] for d in chosen])
        items.append(Item(messages, list(row["answers"]), citation=position + 1, id=row.get("id", "")))
    return items, skipped


def chat_items(path: Path, limit: int | None) -> list[Item]:
    items = []
    for row in _jsonl(path)[:limit]:
        messages = row.get("messages") or []
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError(f"{path}: chat rows must end with the reference assistant turn")
        reference = messages[-1]["content"]
        cited = citations(reference)
        items.append(Item(messages[:-1], [reference], citation=cited[0] if cited else None))
    return items


def generate(
    model: Any, tokenizer: Any, prompts: list[list[Message]], batch_size: int, max_new: int
) -> list[str]:
    """Greedy answers to chat prompts, batched with left padding."""
    return [text for text, _ in generate_turns(model, tokenizer, prompts, batch_size, max_new)]


def generate_turns(
    model: Any, tokenizer: Any, prompts: list[list[Message]], batch_size: int, max_new: int
) -> list[tuple[str, int | None]]:
    """Greedy answers with the stop token that ended each (None: it ran into `max_new`): whether a model
    still closes its turn with the chat template's end-of-turn token, or ends a document instead."""
    import torch

    from trainer.tokenizer import stop_token_ids

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    stops = stop_token_ids(tokenizer)
    out: list[tuple[str, int | None]] = []
    model.eval()
    for i in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
            for p in prompts[i : i + batch_size]
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            gen = model.generate(
                **enc, max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        new = gen[:, enc["input_ids"].shape[1] :]
        for row, text in zip(
            new.tolist(), tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
        ):
            ended = next((t for t in row if t in stops), None)
            out.append((text.strip(), ended))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score(items: list[Item], predictions: list[str]) -> dict[str, Any]:
    em = [exact_match(p, it.answers) for it, p in zip(items, predictions, strict=True)]
    cited = [(it, p) for it, p in zip(items, predictions, strict=True) if it.citation is not None]
    result: dict[str, Any] = {"n": len(items), "exact_match": sum(em) / len(items) if items else 0.0}
    if cited:
        result["citation_accuracy"] = sum(citations(p)[:1] == [it.citation] for it, p in cited) / len(cited)
    result["examples"] = [
        {"id": it.id, "expected": it.answers[0], "got": p, "correct": ok}
        for it, p, ok in list(zip(items, predictions, em, strict=True))[:5]
    ]
    return result


def run_evaluate(cfg: EvalConfig) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    rng = random.Random(cfg.seed)
    docs = read_docs(cfg.docs) if cfg.docs else None
    sets: dict[str, tuple[list[Item], int]] = {}
    for f in cfg.questions:
        sets[f"{f.stem}{'-grounded' if docs else '-closed_book'}"] = question_items(
            f, docs, cfg.passages, rng, cfg.limit
        )
    for f in cfg.data:
        sets[f.stem] = (chat_items(f, cfg.limit), 0)
    report: dict[str, Any] = {"model": str(path), "sets": {}}
    for name, (items, skipped) in sets.items():
        preds = generate(model, tokenizer, [it.messages for it in items], cfg.batch_size, cfg.max_new_tokens)
        report["sets"][name] = {**score(items, preds), "skipped": skipped}
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"model {report['model']}"]
    for name, r in report["sets"].items():
        cite = f", citation {r['citation_accuracy']:.1%}" if "citation_accuracy" in r else ""
        skipped = f" ({r['skipped']} skipped: no supporting document)" if r.get("skipped") else ""
        lines.append(f"  {name:<28} exact match {r['exact_match']:.1%} of {r['n']}{cite}{skipped}")
    return "\n".join(lines)
