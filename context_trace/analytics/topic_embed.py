"""
Questions as vectors: static word embeddings read from the ``wordllama``
wheel's own files, nothing downloaded (see ``topics``, step 1).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "Vectors", "embed"]

Vectors = npt.NDArray[np.float32]

# Questions are embedded from at most this many characters.
_MAX_CHARS = 2000
_BATCH = 4096
# The most words whose tokens an embedder keeps (then it starts again).
_WORDS = 200_000

_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"


class Embedder:
    """
    Static word embeddings read from the ``wordllama`` wheel's own files.

    Raises:
        ImportError: If ``wordllama`` (the ``analytics`` extra) is not installed.
        FileNotFoundError: If its wheel lacks the ``l2_supercat`` files.
    """

    def __init__(self) -> None:
        spec = importlib.util.find_spec("wordllama")
        locations = spec.submodule_search_locations if spec is not None else None
        if not locations:
            raise ImportError(
                "topics need the wordllama package: pip install"
                " 'context-trace[analytics]'"
            )
        root = Path(next(iter(locations)))
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.table: Vectors = np.ascontiguousarray(
            load_file(str(root / _WEIGHTS))["embedding.weight"], dtype=np.float32
        )
        self.tokenizer = Tokenizer.from_file(str(root / _TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._by_word = _splits_at_spaces(self.tokenizer)
        self._words: dict[str, list[int]] = {}
        self._words_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def __call__(self, texts: Sequence[str]) -> Vectors:
        """
        Unit vectors, one row per text (a text with no known token: zeros).

        A text's token vectors are summed in token order (a sparse matrix of
        token counts times the table: no copy of each token's vector), and
        each distinct text of a batch is tokenized and summed once.
        """
        from scipy.sparse import csr_matrix

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        vocabulary = self.table.shape[0]
        for start in range(0, len(texts), _BATCH):
            chunk = [t[:_MAX_CHARS] for t in texts[start : start + _BATCH]]
            distinct = {t: i for i, t in enumerate(dict.fromkeys(chunk))}
            tokens = self.token_ids(list(distinct))
            lengths = np.fromiter(map(len, tokens), np.int64, len(tokens))
            ids = np.fromiter(
                itertools.chain.from_iterable(tokens), np.int64, int(lengths.sum())
            )
            np.clip(ids, 0, vocabulary - 1, out=ids)
            rows = np.flatnonzero(lengths)
            if rows.size == 0:
                continue
            counts = csr_matrix(
                (np.ones(ids.size, np.float32), ids,
                 np.concatenate(([0], np.cumsum(lengths)))),
                shape=(len(tokens), vocabulary),
            )  # fmt: skip
            sums = np.asarray(counts @ self.table)
            vectors = np.zeros((len(tokens), self.dim), dtype=np.float32)
            vectors[rows] = sums[rows] / lengths[rows, None]
            out[start : start + len(chunk)] = vectors[
                np.fromiter(map(distinct.__getitem__, chunk), np.int64, len(chunk))
            ]
        _normalise(out)
        return out

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """
        Each text's token ids, as the tokenizer gives them for the whole text.

        With this tokenizer (no pre-tokenizer: spaces become ``▁``, which no
        token holds after other characters), a text is its space-separated
        words' tokens, each word's as if alone: words are tokenized once and
        kept (up to :data:`_WORDS` of them). A text this does not hold for
        (a leading, trailing or double space, a ``▁``, a ``<`` that could
        start a special token) is tokenized whole.
        """
        # encode_batch_fast (tokenizers >= 0.21) skips the characters' offsets.
        encode = getattr(
            self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch
        )
        if not self._by_word:
            return [e.ids for e in encode(list(texts), add_special_tokens=False)]
        with self._words_lock:
            return self._by_words(texts, encode)

    def _by_words(self, texts: Sequence[str], encode: Any) -> list[list[int]]:
        split = [
            None if "▁" in t or "<" in t or "" in (words := t.split(" ")) else words
            for t in texts
        ]
        known = self._words
        if len(known) > _WORDS:
            known.clear()
        new = list(
            dict.fromkeys(
                w for words in split if words for w in words if w not in known
            )
        )
        whole = [t for t, words in zip(texts, split, strict=True) if words is None]
        encoded = encode(new + whole, add_special_tokens=False) if new or whole else []
        known.update(zip(new, (e.ids for e in encoded), strict=False))
        rest = iter(encoded[len(new) :])
        return [
            next(rest).ids
            if words is None
            else list(itertools.chain.from_iterable(map(known.__getitem__, words)))
            for words in split
        ]


def _splits_at_spaces(tokenizer: Any) -> bool:
    """Whether a text's tokens are its space-separated words' (see token_ids)."""
    normalizer = tokenizer.normalizer
    return (
        tokenizer.pre_tokenizer is None
        and type(tokenizer.model).__name__ == "BPE"
        and normalizer is not None
        and json.loads(normalizer.__getstate__())
        == {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        and not any("▁" in t[1:] and t.strip("▁") for t in tokenizer.get_vocab())
        and all(
            t.content.startswith("<")
            for t in tokenizer.get_added_tokens_decoder().values()
        )
    )  # fmt: skip


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def embed(texts: Sequence[str]) -> Vectors:
    """*texts* as unit vectors (the embeddings are loaded once per process)."""
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            _embedder = Embedder()
        embedder = _embedder
    return embedder(texts)


def _normalise(x: Vectors) -> None:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
