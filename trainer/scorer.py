"""Scoring with a trained reward model: the inference side of `trainer.reward_model`, what RL's rlhf reward
calls. A reward model is a one-label sequence classifier read at the last token of the chat-templated
conversation (prompt messages, then the answer as the assistant's turn).

    scorer = RewardScorer("var/checkpoints/reward/TAG")
    scorer.score([[{"role": "user", "content": "Who leads Kelvor Dynamics?"}]], ["Orvan Teel"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.checkpoint import resolve_checkpoint

Messages = list[dict[str, str]]


def chat_ids(tokenizer: Any, prompt: Messages, completion: str) -> list[int]:
    """The tokens the reward model reads: the chat-templated conversation, answer included."""
    messages = [*prompt, {"role": "assistant", "content": completion}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def reward_scores(
    model: Any, tokenizer: Any, prompts: Sequence[Messages], completions: Sequence[str], batch_size: int = 16
) -> list[float]:
    """The model's score of each (prompt, completion), in batches of similar length, without gradients."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    window = model.config.max_position_embeddings
    ids = [chat_ids(tokenizer, p, c)[-window:] for p, c in zip(prompts, completions, strict=True)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = model.config.pad_token_id
    device = next(model.parameters()).device
    scores = [0.0] * len(ids)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                input_ids = torch.full((len(batch), max(len(ids[i]) for i in batch)), pad, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0])
    finally:
        model.train(training)
    return scores


class RewardScorer:
    """A trained reward model, for RL: higher scores are better answers."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.path = resolve_checkpoint(path)
        config = AutoConfig.from_pretrained(str(self.path))
        archs = config.architectures or []
        if config.num_labels != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ValueError(
                f"{self.path} is not a reward model (a one-label sequence classifier, got {archs}): "
                "train one with `python -m trainer reward-model`"
            )
        if config.pad_token_id is None:
            raise ValueError(f"{self.path}: a reward model needs `pad_token_id` in its config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(self.path), dtype=torch.float32)
        self.model.to(device).eval()
        self.batch_size = batch_size

    def score(self, prompts: list[list[dict[str, str]]], completions: list[str]) -> list[float]:
        """The reward of each completion (the assistant's text) after its prompt (messages, no answer)."""
        return reward_scores(self.model, self.tokenizer, prompts, completions, self.batch_size)
