"""The contamination guard: no training row may overlap an eval question, of the question files or of
the synthetic worlds."""

from __future__ import annotations

from eval.contamination import QuestionGrams, load_questions, row_text, words
from eval.whatsnew.config import Row, WhatsNewConfig, world_spec
from eval.whatsnew.facts import Fact
from eval.whatsnew.text import _GENERIC
from eval.world import WorldConfig, generate_world


def _topic(text: str) -> set[str]:
    return {w for w in words(text) if w not in _GENERIC and not w.isdigit() and len(w) > 2}


class EvalGuard:
    """What overlaps an eval question: a row sharing an n-gram with one (question and answer, the test of
    `eval.contamination`), and a fact that states an eval answer, as its answer or in its question ("What is
    the title of PEP 634?" is the eval question "Which PEP specifies structural pattern matching?" turned
    round), while sharing a topic word with that eval question."""

    def __init__(self, questions: list[dict[str, object]], n: int) -> None:
        self.questions = len(questions)
        self.grams = QuestionGrams(questions, n)
        self.topics: dict[tuple[str, ...], list[set[str]]] = {}  # an answer's words -> its questions' topics
        for q in questions:
            answers = q.get("answers")
            for a in answers if isinstance(answers, list) else []:
                if key := tuple(words(str(a))):
                    self.topics.setdefault(key, []).append(_topic(str(q["question"])))
        self.longest = max(map(len, self.topics), default=0)

    def states_eval_answer(self, fact: Fact) -> bool:
        toks = words(f"{fact.question} {fact.answer}")
        topic = _topic(f"{fact.question} {fact.answer}")
        return any(
            topic & other
            for i in range(len(toks))
            for size in range(1, self.longest + 1)
            for other in self.topics.get(tuple(toks[i : i + size]), ())
        )

    def overlaps(self, row: Row) -> bool:
        return next(self.grams.matches(words(row_text(row))), None) is not None


def eval_questions(cfg: WhatsNewConfig) -> list[dict[str, object]]:
    """The question rows no training row may overlap: the files, then each world's questions."""
    questions = load_questions(cfg.eval_questions) if cfg.eval_questions else []
    for spec in cfg.worlds:
        size, seed = world_spec(spec)
        questions += [q.to_row() for q in generate_world(WorldConfig(seed=seed, size=size)).questions]
    return questions
