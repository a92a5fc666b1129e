"""A synthetic world with a knowledge cutoff: the controlled ground truth every phase is built and
measured on.

    python -m eval world --seed 0 --size tiny --out data/world [--paraphrases K] [--json]

In Python:

    from eval.world import WorldConfig, generate_world, write_world
    world = generate_world(WorldConfig(seed=0, size="nano"))
    manifest = write_world(world, "data/world")

See README.md in this folder for the layout of the output and the counts per size.
"""

from core.prompts import (
    ABSTAIN_ANSWER,
    CLOSED_BOOK_SYSTEM,
    GROUNDED_SYSTEM,
    citations,
    cite,
    closed_book_messages,
    format_passages,
    grounded_messages,
)
from eval.world.config import AS_OF, CUTOFF, GENERATOR_VERSION, SIZES, SizeSpec, WorldConfig
from eval.world.generate import World, generate_world
from eval.world.model import CATEGORIES, Document, Entity, Fact, Question, contains_phrase
from eval.world.writer import manifest_summary, render_markdown, write_world

__all__ = [
    "ABSTAIN_ANSWER",
    "AS_OF",
    "CATEGORIES",
    "CLOSED_BOOK_SYSTEM",
    "CUTOFF",
    "GENERATOR_VERSION",
    "GROUNDED_SYSTEM",
    "SIZES",
    "Document",
    "Entity",
    "Fact",
    "Question",
    "SizeSpec",
    "World",
    "WorldConfig",
    "citations",
    "cite",
    "closed_book_messages",
    "contains_phrase",
    "format_passages",
    "generate_world",
    "grounded_messages",
    "manifest_summary",
    "render_markdown",
    "write_world",
]
