"""An AI judge for RLAIF: any OpenAI-compatible endpoint rates answers against a written constitution.

    judge = Judge("http://127.0.0.1:8000/v1", "keepcurrent", DEFAULT_CONSTITUTION, log_path="judge.jsonl")
    judge.score([[{"role": "user", "content": "Who leads Kelvor Dynamics?"}]], ["Orvan Teel [1]"])

The endpoint is our gateway's `/v1/chat/completions` or a stronger model behind vLLM (`vllm serve`); the
official `openai` client talks to it and retries 429 and 5xx answers with exponential backoff (honouring
Retry-After). The judge reads the constitution (a file of numbered principles; the default is
`trainer/constitution.md`), the conversation and the answer, and replies `Score: N` (0-10). The reply is
parsed leniently: `Score: 7`, `7/10`, `8 out of 10`, `Grade: B+`, a bare leading `6`. A reply that gives no
grade scores `unparseable_score` (neutral by default: the judge's failure is not the answer's) and is
counted; every judge prompt and raw reply is appended to `log_path` as JSON lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_CONSTITUTION = Path(__file__).with_name("constitution.md")
Messages = list[dict[str, str]]

SYSTEM = """You are a strict judge. You rate one answer of an AI assistant against these principles:

{constitution}

Reply with the rating on the first line, as `Score: N`, where N is a whole number from 0 (breaks the \
principles) to 10 (follows every principle), then one short sentence that gives the reason."""

USER = """The conversation the assistant was given:

{conversation}

The assistant's answer:

{answer}

Rate the answer. First line: Score: N (0 to 10)."""

# A whole number (never a prefix of one), not the start of a range such as "0 to 10" or "1-5".
_NUMBER = r"(\d+(?:\.\d+)?)(?!\d|\.\d)(?!\s*(?:to|-|–)\s*\d)"
_KEYWORD = r"\b(?:score|rating|grade)\b\s*(?:\([^)]*\)\s*)?(?:is\s*)?[:=]?\s*"
_OUT_OF = rf"\s*(?:/|out\s+of)\s*{_NUMBER}"
_LETTER = r"([A-F])([+-]?)(?![A-Za-z])"
LETTER_SCORES = {"A": 1.0, "B": 0.75, "C": 0.5, "D": 0.25, "E": 0.0, "F": 0.0}


def parse_judgment(text: str) -> tuple[float | None, str]:
    """(score in [0, 1], how it was read) from a judge's reply, or (None, why not). A number without a
    scale is out of 10."""
    clean = text.replace("*", "").replace("`", "").strip()
    if not clean:
        return None, "empty reply"
    first = clean.splitlines()[0].strip()
    for pattern, where in (
        (rf"{_KEYWORD}{_NUMBER}(?:{_OUT_OF})?", "after 'score'"),
        (rf"{_NUMBER}{_OUT_OF}", "as a fraction"),
        (rf"^{_NUMBER}(?![\d.]*\s*[A-Za-z%])", "at the start"),
    ):
        m = re.search(pattern, clean if where != "at the start" else first, re.IGNORECASE)
        if m:
            value = float(m.group(1))
            scale = float(m.group(2)) if m.lastindex == 2 else 10.0
            if scale <= 0 or not 0 <= value <= scale:
                return None, f"{m.group(0).strip()!r} is outside 0-{scale:g}"
            return value / scale, f"{m.group(0).strip()!r} {where}"
    m = re.search(rf"\bgrade\b\s*(?:is\s*)?[:=]?\s*{_LETTER}", clean, re.IGNORECASE) or re.fullmatch(
        rf"{_LETTER}[.!:)]?", first
    )
    if m and m.group(1).upper() in LETTER_SCORES:
        sign = {"+": 1, "-": -1}.get(m.group(2), 0)
        score = min(1.0, max(0.0, LETTER_SCORES[m.group(1).upper()] + sign / 12))
        return score, f"letter grade {m.group(1).upper()}{m.group(2)}"
    return None, f"no grade in {first[:80]!r}"


def judge_messages(constitution: str, prompt: Messages, completion: str) -> Messages:
    """The chat the judge is sent: the principles, then the conversation and the answer to rate."""
    conversation = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in prompt)
    return [
        {"role": "system", "content": SYSTEM.format(constitution=constitution.strip())},
        {"role": "user", "content": USER.format(conversation=conversation, answer=completion)},
    ]


class Judge:
    """Scores answers in [0, 1] with an OpenAI-compatible model that applies a constitution."""

    def __init__(
        self,
        base_url: str,
        model: str,
        constitution: str | Path,
        api_key: str | None = None,
        log_path: str | Path | None = None,
        timeout: float = 60.0,
        *,
        max_tokens: int = 64,
        retries: int = 5,
        workers: int = 4,
        unparseable_score: float = 0.5,
    ) -> None:
        import openai

        path = Path(constitution).expanduser()
        if not path.is_file():
            raise ValueError(f"constitution file {path} not found (the default: {DEFAULT_CONSTITUTION})")
        self.constitution = path.read_text(encoding="utf-8")
        if not self.constitution.strip():
            raise ValueError(f"constitution file {path} is empty: write the principles the judge applies")
        if not 0 <= unparseable_score <= 1:
            raise ValueError(f"unparseable_score must be in [0, 1], got {unparseable_score}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_tokens, self.workers, self.unparseable_score = max_tokens, workers, unparseable_score
        self.log_path = Path(log_path).expanduser() if log_path is not None else None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.counts: Counter[str] = Counter()  # judged, parsed, unparseable, refused
        self._lock = threading.Lock()
        # vLLM and an open gateway take any key; the client insists on one.
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=retries
        )
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.APIConnectionError as e:
            raise ConnectionError(f"the judge endpoint {self.base_url} is unreachable: {e}") from None
        except openai.AuthenticationError:
            raise ValueError(f"the judge endpoint {self.base_url} refused the API key") from None
        except openai.APIStatusError as e:
            raise ValueError(
                f"the judge endpoint {self.base_url} answered /models with {e.status_code}"
            ) from None
        if model not in served:
            raise ValueError(
                f"the judge endpoint {self.base_url} does not serve {model!r}; it serves: {served}"
            )

    def score(self, prompts: list[list[dict[str, str]]], completions: list[str]) -> list[float]:
        """The judge's score in [0, 1] of each completion (the assistant's text) after its prompt."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._judge_one, prompts, completions))

    def _judge_one(self, prompt: Messages, completion: str) -> float:
        import openai

        messages = judge_messages(self.constitution, prompt, completion)
        reply: str | None = None
        outcome = "unparseable"
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                temperature=0.0,
            )
            reply = response.choices[0].message.content or ""
            score, reason = parse_judgment(reply)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            # This judgment only (e.g. a prompt longer than the judge's window): the run goes on.
            score, reason, outcome = None, f"the endpoint refused the request: {e.message}", "refused"
        except openai.APIConnectionError as e:
            raise ConnectionError(f"the judge endpoint {self.base_url} is unreachable: {e}") from None
        except (openai.RateLimitError, openai.InternalServerError) as e:
            raise ConnectionError(
                f"the judge endpoint {self.base_url} still answers {e.status_code} after "
                f"{self.client.max_retries} retries"
            ) from None
        self._count("judged", "parsed" if score is not None else outcome)
        if score is None:
            logger.warning("judge: %s; scored %.2f", reason, self.unparseable_score)
        final = self.unparseable_score if score is None else score
        self._log({"messages": messages, "judgment": reply, "score": final, "parsed": score is not None,
                   "reason": reason})  # fmt: skip
        return final

    def _count(self, *keys: str) -> None:
        with self._lock:
            self.counts.update(keys)

    def _log(self, record: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        line = json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "model": self.model,
                           **record})  # fmt: skip
        with self._lock, self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
