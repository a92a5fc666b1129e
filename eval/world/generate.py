"""The whole world in memory: `generate_world(WorldConfig(seed=0, size="tiny"))`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from eval.world.build import Timeline, build_timeline
from eval.world.config import WorldConfig
from eval.world.model import Document, Question
from eval.world.questions import build_questions
from eval.world.render import render_documents
from eval.world.training import Row, build_training_data

logger = logging.getLogger(__name__)


@dataclass
class World:
    config: WorldConfig
    timeline: Timeline
    documents: list[Document]  # corpus_pre (ids pre-*) then docs_post (ids post-*)
    questions: list[Question]
    sft: list[Row]
    rl: list[Row]
    prefs: list[Row]

    @property
    def corpus_pre(self) -> list[Document]:
        return [d for d in self.documents if d.era == "pre"]

    @property
    def docs_post(self) -> list[Document]:
        return [d for d in self.documents if d.era == "post"]


def generate_world(config: WorldConfig) -> World:
    """Deterministic: the same config gives the same world, whatever the process or platform."""
    started = time.perf_counter()
    timeline = build_timeline(config)
    documents = render_documents(timeline, config)
    questions = build_questions(timeline, documents, config)
    training = build_training_data(timeline, documents, config)
    logger.info(
        "generated world seed=%s size=%s: %d entities, %d facts, %d documents, %d questions in %.2fs",
        config.seed,
        config.size,
        len(timeline.entities),
        len(timeline.facts),
        len(documents),
        len(questions),
        time.perf_counter() - started,
    )
    return World(config, timeline, documents, questions, training.sft, training.rl, training.prefs)
