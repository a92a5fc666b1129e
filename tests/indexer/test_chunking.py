from __future__ import annotations

import itertools

from indexer.embedding import Chunker


def test_chunks_fit_in_tokens_overlap_and_map_to_offsets(embedder) -> None:  # type: ignore[no-untyped-def]
    paragraphs = [
        f"Paragraph {i}: the Kelvor company opened office number {i} in the city of Arden." for i in range(60)
    ]
    text = "\n\n".join(paragraphs)
    chunker = Chunker(embedder, size=64, overlap=16)
    spans = chunker.split(text)
    assert len(spans) > 5
    count = lambda s: len(embedder.tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    for i, span in enumerate(spans):
        assert span.ordinal == i
        assert text[span.start : span.end] == span.text
        assert count(span.text) <= 64
    assert spans[0].start == 0 and spans[-1].end == len(text)


def test_long_paragraph_chunks_overlap(embedder) -> None:  # type: ignore[no-untyped-def]
    # Overlap is made of whole pieces of the level that was split: here words, inside one paragraph.
    text = " ".join(f"word{i}" for i in range(400))
    spans = Chunker(embedder, size=64, overlap=16).split(text)
    assert len(spans) > 3
    for a, b in itertools.pairwise(spans):
        assert b.start < a.end, "neighbouring chunks should share their boundary words"
        assert text[b.start : a.end].strip()


def test_short_text_is_one_chunk(embedder) -> None:  # type: ignore[no-untyped-def]
    [span] = Chunker(embedder, size=64, overlap=8).split("One short line.")
    assert (span.start, span.end, span.text) == (0, 15, "One short line.")
