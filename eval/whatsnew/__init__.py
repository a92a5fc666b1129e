"""Reading rows from the pre-cutoff Python "What's New" pages: SFT and RL data for the grounded reader.

    python -m eval whatsnew-rows --pages data/python-docs/whatsnew-pre --out DIR [--seed 0] [--json]

Rule-based, deterministic for a seed, about 15 s on one core for the 22 pages (2.0-3.13). The pages
(`whatsnew-X.Y.md`, front matter with version and date) are split into paragraphs under their headings,
and patterns over that structure give *facts*: a question, the shortest answer the page states, and the
paragraph that states it. The patterns: PEP headings (which PEP, its title, its authors), new modules,
functions, classes and parameters added to a module, sentences about code names asked with the name left
out ("In Python 3.12, which function now supports resource directories?"), removals, deprecations and their
replacements, renames, speed-ups, library versions, contributors and issue numbers, release dates,
editors. Each fact becomes one row; its gold passage is a window of the page around the answer (about
60-150 words) that contains the answer verbatim, the answer is cited with `cite()`, and the prompt is
`grounded_messages()`, the format the model is served with.

DIR gets:

- `sft/reading.jsonl`: one passage or 3-4 (`--multi-share`): the gold passage among chunks of other
  sections and pages that neither state the answer nor may answer the question another way, in random
  order (a chunk states the answer as `core.answers.contains_answer` counts it, the test of RL's citation
  reward and of the eval: case, punctuation and articles aside). Distractors hold a value of the asked
  type where the pages have one (another PEP for a "which PEP" question, another issue number, another
  "Contributed by", another code name; `_TYPED`): measured in issue 20, a reader trained with random
  distractors copied a span of the right type from the wrong passage ("PEP 750 [2]"), which a passage
  with no PEP in it never teaches it not to do. The first distractor is the one BM25 ranks highest for
  the question;
- `sft/distractor.jsonl`: the gold passage and the same kind of statement in a neighbouring version's page
  with another value (an addition to the same module, a library version, a release date), and a question
  that names the version, so that only one passage answers it: its title ("What's New in Python 3.12")
  says which;
- `sft/abstain.jsonl` (`--abstain-share` of all SFT rows): a question with hard negatives, the chunks our
  own retriever ranks highest for it (the indexer's chunker with its default size, and its BM25, over the
  same pages, in memory) that neither state the answer nor may answer it; the answer is `ABSTAIN_ANSWER`;
- `rl/grounded.jsonl`: reading rows of held-out facts (no SFT row asks about them) as the RL rows
  `{prompt, answers, kind, passages, gold_passage}` that `python -m trainer rl --data DIR/rl` reads;
- `manifest.json`: counts per kind, the resolved config, the pages' and files' sha256, what was dropped.

No row may overlap an eval question (`--eval-questions`, and the questions of the synthetic worlds named by
`--worlds`, generated in memory): facts that state an eval question's answer and share a topic word with
it are dropped, and so is every row that shares an n-gram with an eval question and its answer (the test
of `python -m eval contamination`, run on the row as the trainer reads it).

The modules, in the order the data flows: `pages` (the pages as paragraphs under their headings), `text`,
`facts`, `changes` and `extract` (the fact patterns; `extract_facts`), `passages` (gold windows, the
retriever's chunks, what a passage states), `guard` (the eval questions no row may overlap), `rows` (the
rows of one fact, with typed distractors), `build` (`generate`), `writer` (the files, the manifest and
`run`), `config` (`WhatsNewConfig`).
"""

from eval.whatsnew.build import Generated, generate
from eval.whatsnew.config import (
    CREDIT_KINDS,
    GENERATOR_VERSION,
    SFT_KINDS,
    Row,
    WhatsNewConfig,
    world_spec,
)
from eval.whatsnew.extract import extract_facts
from eval.whatsnew.facts import Fact
from eval.whatsnew.guard import EvalGuard, eval_questions
from eval.whatsnew.pages import PAGE_GLOB, Page, Para, category, load_pages, parse_page, version_key
from eval.whatsnew.passages import ChunkIndex, may_answer, passage_window
from eval.whatsnew.writer import OUTPUTS, check_out_dir, format_summary, prepare_out_dir, run, write_rows

__all__ = [
    "CREDIT_KINDS",
    "GENERATOR_VERSION",
    "OUTPUTS",
    "PAGE_GLOB",
    "SFT_KINDS",
    "ChunkIndex",
    "EvalGuard",
    "Fact",
    "Generated",
    "Page",
    "Para",
    "Row",
    "WhatsNewConfig",
    "category",
    "check_out_dir",
    "eval_questions",
    "extract_facts",
    "format_summary",
    "generate",
    "load_pages",
    "may_answer",
    "parse_page",
    "passage_window",
    "prepare_out_dir",
    "run",
    "version_key",
    "world_spec",
    "write_rows",
]
