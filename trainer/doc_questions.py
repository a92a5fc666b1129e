"""Question-form rewrites of new documents for continued pretraining: facts put as questions and answers.

A model trained on a fact's sentence can often complete the sentence and still not answer a question about
it: the knowledge is stored but not extractable (Allen-Zhu & Li, Physics of LMs 3.1: mixing question/answer
text into pretraining is what made facts answerable, and it carried over to people whose biographies had no
questions; Jiang et al. 2024, "Instruction-tuned LMs are better knowledge learners"). Measured here: CPT of
SmolLM2 on the world's news, 12 epochs with paraphrases, answered 0 of 20 `new` questions closed book;
with these rows, 18 of 33 (16 passes, merged with the reader's chat vector; docs/demo.md). It did not carry
over at this scale: with half the documents questioned, the others' facts were answered 0 of 17 times.

Rule-based, no model needed, deterministic. Each sentence of a document (split as the paraphraser splits
them; a leading date or place moved to the end first, "On 4 May, X did Y." -> "X did Y on 4 May.") yields
questions whose answer is a span of that sentence, the span kinds an encyclopedia question asks for:

- a date or year ("when"), a place after in/at/to/from ("where"), a number ("how many"/"what"), and the
  sentence's subject when it is a name ("who"/"what": "X is the new chief executive of Y." -> "Who is the
  new chief executive of Y?");
- with an auxiliary after the subject (is, was, has, ...) the question inverts ("X was born in 1986." ->
  "When was X born?"); otherwise it is the echo form ("X took place in Korme when?"), never a wrong verb.

Each question becomes a chat row asked the way the closed-book strategy asks (`core.prompts`), answered with
the span. The documents' text is the only input: the generator never sees an eval question (and
`python -m eval contamination` reports how close its rows come to them).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.prompts import closed_book_messages
from trainer.paraphrase import DATE, reorder_clauses, split_sentences

# "in Korme", "to New Oskar": a capitalised name after a place preposition.
_NAME = r"[A-Z][\w.'-]*(?: (?:of |de |the )?[A-Z0-9][\w.'-]*)*"
DATE_SPAN = re.compile(rf"\b(?:(?:on|in|since|by|from|until) )?({DATE})\b")
_PLACE_SPAN = re.compile(rf"\b(?:in|at|to|from) ({_NAME})")
_CODE = re.compile(r">>>|[()\[\]{}=_`]|\w\.\w+\(")
_AGENT_SPAN = re.compile(rf"\bby ((?:the )?{_NAME})")
# A number with its percent sign (one right after a capitalised word is part of a name: "Python 3.14").
_NUMBER_SPAN = re.compile(r"(?<![\w.,/-])(\d+(?:,\d{3})*(?:\.\d+)?(?: ?%| percent)?)(?![\w.,/-]*\d)")
_SUBJECT = re.compile(rf"^((?:The )?{_NAME}) (is|was|are|were|has|have|had|will|can|does|did)\b (.+)$")
_VERB = r"[a-z]+(?:ed|es|s)|took|made|won|held|became|began|left|put|sold|bought|built|gave|led|met|ran|wrote"
_SUBJECT_VERB = re.compile(rf"^((?:The )?{_NAME}) ((?:now |also |then )?(?:{_VERB}))\b (.+)$")
# Words that start a sentence without being a name: never asked "who" about.
_NOT_NAMES = frozenset((
    "The", "A", "An", "This", "That", "These", "Those", "It", "Its", "In", "On", "At", "By", "For", "From",
    "After", "Before", "During", "Since", "Until", "When", "While", "If", "As", "With", "Without", "Also",
    "However", "Because", "There", "Here", "Some", "Many", "Most", "All", "Each", "Every", "New", "To",
    "See", "Note", "Use", "What", "Why", "How", "Who", "Which", "Where", "Python",
))  # fmt: skip
# Last words that make a name an organisation, a product or an event rather than a person.
_THINGS = frozenset((
    "Works", "Systems", "Labs", "Group", "Partners", "Dynamics", "Inc", "Ltd", "Company", "Corporation",
    "Foundation", "Institute", "University", "Festival", "Fair", "Summit", "Conference", "Cup", "Games",
    "Award", "Prize", "Party", "Bank", "Council", "Agency", "Project", "Module", "API", "Python", "PEP",
    "Library", "Society", "Museum", "Team", "Club",
))  # fmt: skip


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    kind: str  # when / where / what / who / how many


def _strip_end(sentence: str) -> str:
    return sentence.rstrip().rstrip(".!?").rstrip()


def _clean(question: str) -> str:
    question = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", question)).strip(" ,")
    return question[:1].upper() + question[1:] + "?"


def _is_person(name: str) -> bool:
    words = name.split()
    return 2 <= len(words) <= 3 and not any(w in _THINGS or any(c.isdigit() for c in w) for w in words)


@dataclass(frozen=True)
class _Subject:
    name: str  # as the sentence spells it ("The Dapaik Fair")
    verb: str  # the auxiliary or main verb after it
    auxiliary: bool

    @property
    def inside(self) -> str:
        """The subject inside a question ("When was the Dapaik Fair ...")."""
        return "the" + self.name[3:] if self.name.startswith("The ") else self.name


def _subject(body: str) -> _Subject | None:
    """The name a sentence opens with, and the verb after it."""
    m = _SUBJECT.match(body)
    aux = m is not None
    m = m or _SUBJECT_VERB.match(body)
    if m is None:
        return None
    name = m.group(1)
    core = name[4:] if name.startswith("The ") else name
    if core.split()[0] in _NOT_NAMES or len(core.split()) > 5:
        return None
    # Every sentence starts with a capital: one word is a name only when it looks like one ("CPython").
    if len(name.split()) == 1 and not re.search(r"[A-Z0-9]", name[1:]):
        return None
    return _Subject(name, m.group(2), aux)


def _asked(body: str, span: tuple[int, int], wh: str, subject: _Subject | None) -> str:
    """`body` with `span` asked about: inverted behind its auxiliary when there is one, else echoed."""
    without = (body[: span[0]] + body[span[1] :]).strip()
    if subject is not None and subject.auxiliary:
        head = f"{subject.name} {subject.verb} "
        if without.startswith(head):
            return _clean(f"{wh} {subject.verb} {subject.inside} {without[len(head) :]}")
    return _clean(f"{body[: span[0]]}{wh}{body[span[1] :]}")


def sentence_questions(sentence: str) -> list[QAPair]:
    """Questions a sentence answers, each with its answer span (verbatim in the sentence)."""
    # Put a leading date or place last ("On 4 May, X did Y." -> "X did Y on 4 May."), so the subject leads.
    if re.match(r"^(On|In|At|By|Since|From|After|Before|During) ", sentence):
        sentence = reorder_clauses(sentence) or sentence
    body = _strip_end(sentence)
    # A heading, a list item or a line of code is not a statement: only whole prose sentences are asked about.
    if not re.search(r"[.!?]$", sentence.rstrip()) or _CODE.search(body) or not 4 <= len(body.split()) <= 40:
        return []
    subject = _subject(body)
    out: list[QAPair] = []
    taken: list[tuple[int, int]] = []
    # (pattern, question word, answer group): dates first, so that a date's numbers are not asked again.
    kinds = ((DATE_SPAN, "when", 1), (_AGENT_SPAN, "by whom", 1), (_PLACE_SPAN, "where", 1),
             (_NUMBER_SPAN, "what", 0))  # fmt: skip
    for pattern, wh, group in kinds:
        for m in pattern.finditer(body):
            a, b = m.span()
            answer = m.group(group).strip()
            if a == 0 or any(a < y and b > x for x, y in taken) or answer.split()[0] in _NOT_NAMES:
                continue
            if wh == "where" and (re.fullmatch(DATE, answer) or re.search(r"\d", answer)):
                continue
            if pattern is _NUMBER_SPAN and re.search(r"\b[A-Z][\w.-]* $", body[:a]):
                continue  # part of a name: "Python 3.14", "PEP 745"
            taken.append((a, b))
            out.append(QAPair(_asked(body, (a, b), wh, subject), answer, wh))
    # "Who ..." about the subject, when the rest names something besides dates and places (else the
    # question has many answers: "Who was born in 1986?").
    if subject is not None:
        rest = body[len(subject.name) :]
        outside = "".join(body[i] for i in range(len(subject.name), len(body))
                          if not any(x <= i < y for x, y in taken))  # fmt: skip
        if re.search(r"[A-Z]", outside) or not re.search(r"[A-Z]", rest):
            wh = "who" if _is_person(subject.name) else "what"
            out.append(QAPair(_clean(f"{wh}{rest}"), subject.name, wh))
    return out


def document_questions(text: str, limit: int | None = None, rng: random.Random | None = None) -> list[QAPair]:
    """Question/answer pairs from every sentence of a document (a sample of `limit` when given)."""
    pairs: list[QAPair] = []
    seen: set[str] = set()
    for sentence in split_sentences(text):
        for pair in sentence_questions(sentence):
            if pair.question not in seen:
                seen.add(pair.question)
                pairs.append(pair)
    if limit is not None and len(pairs) > limit:
        pairs = (rng or random.Random(0)).sample(pairs, limit)
    return pairs


def question_rows(
    docs: Sequence[tuple[str, str]], per_document: int | None = None, seed: int = 0
) -> list[tuple[str, list[dict[str, str]]]]:
    """(document id, chat messages) rows: each question asked as the closed-book strategy asks it."""
    rows: list[tuple[str, list[dict[str, str]]]] = []
    for doc_id, text in docs:
        for pair in document_questions(text, per_document, random.Random(f"{seed}:{doc_id}")):
            messages = [*closed_book_messages(pair.question), {"role": "assistant", "content": pair.answer}]
            rows.append((doc_id, messages))
    return rows
