"""Tokenizers: SentencePiece (train one from texts, load any ``.model``), OpenAI BPE and
Hugging Face ``tokenizer.json`` files.

All return ``int64`` arrays of shape ``[n, context_length]``: ids, then EOS, then padding. A
text longer than the context is truncated so that its EOS is kept as the last token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from metaclip.train.config import ConfigError, TokenizerConfig

log = logging.getLogger(__name__)


def train_sentencepiece(
    files: Sequence[str | Path],
    model_prefix: str | Path,
    vocab_size: int = 32000,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_sentences: int = 5_000_000,
    seed_sentencepiece_size: int = 1_000_000,
) -> Path:
    """Train a SentencePiece model on text files (one text per line); returns the ``.model``.

    Special ids: pad 0, unk 1, bos 2, eos 3 (``eos`` is what the text tower pools at).
    """
    import sentencepiece as spm

    files = [str(f) for f in files]
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"tokenizer training file {f!r} does not exist")
    Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=files,
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=seed_sentencepiece_size,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return Path(f"{model_prefix}.model")


def _pack(ids: Iterable[list[int]], n: int, ctx: int, eos: int, pad: int) -> np.ndarray:
    out = np.full((n, ctx), pad, dtype=np.int64)
    for row, seq in enumerate(ids):
        seq = [*seq[: ctx - 1], eos]
        out[row, : len(seq)] = seq
    return out


class SentencePieceTokenizer:
    """Loads any SentencePiece ``.model``; the model must define an EOS piece."""

    def __init__(self, path: str | Path, context_length: int) -> None:
        import sentencepiece as spm

        if not Path(path).is_file():
            raise ConfigError(f"SentencePiece model {str(path)!r} does not exist")
        self.path, self.context_length = str(path), context_length
        self.sp = spm.SentencePieceProcessor(model_file=self.path)
        self.eos_id = self.sp.eos_id()
        if self.eos_id < 0:
            raise ConfigError(f"{path}: the SentencePiece model has no EOS id")
        self.pad_id = max(self.sp.pad_id(), 0)
        self.vocab_size = self.sp.get_piece_size()
        self.pool = "eos"

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = self.sp.encode(texts, out_type=int)
        return _pack(ids, len(texts), self.context_length, self.eos_id, self.pad_id)

    def __getstate__(self) -> dict:  # picklable for DataLoader workers
        return {"path": self.path, "context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["path"], state["context_length"])


class OpenAIBPETokenizer:
    """The OpenAI CLIP BPE (vocabulary shipped in the open_clip wheel, no download)."""

    def __init__(self, context_length: int = 77) -> None:
        from open_clip import SimpleTokenizer  # re-exported from open_clip.tokenizer

        self.bpe = SimpleTokenizer()
        self.context_length = context_length
        self.sot_id = self.bpe.encoder["<start_of_text>"]
        self.eos_id = self.bpe.encoder["<end_of_text>"]
        self.pad_id, self.vocab_size, self.pool = 0, len(self.bpe.encoder), "argmax"

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = ([self.sot_id, *self.bpe.encode(t)] for t in texts)
        return _pack(ids, len(texts), self.context_length, self.eos_id, self.pad_id)


# Looked up in this order when the file does not say (its padding section, or the last
# special token its post-processor appends).
_EOS_TOKENS = ("</s>", "<|endoftext|>", "<end_of_text>", "<eos>", "[SEP]")
_PAD_TOKENS = ("<pad>", "[PAD]", "<|pad|>")


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (the ``tokenizers`` library), with the file's ids.

    Ids are the file's, special tokens included: XLM-V's file (MetaCLIP 2) maps ``<s>`` 0,
    ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 — the fairseq layout, one more than the ids of the
    SentencePiece ``.model`` shipped beside it, so load the ``.json`` to get MetaCLIP 2's ids.
    The post-processor's tokens are added (XLM-V: ``<s> text </s>``); a text that is too long
    loses its last words, never the EOS. The EOS is the post-processor's last special token,
    else the first of ``</s>``, ``<|endoftext|>``, ``<end_of_text>``, ``<eos>``, ``[SEP]``
    the file knows (appended when the file adds none); the pad is the file's padding id,
    else ``<pad>``/``[PAD]``/``<|pad|>``, else 0. The text tower pools at the EOS.
    """

    def __init__(self, path: str | Path, context_length: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError("tokenizer.kind = 'hf' needs the tokenizers package") from None
        if not Path(path).is_file():
            raise ConfigError(f"tokenizer file {str(path)!r} does not exist")
        self.path, self.context_length = str(path), context_length
        try:
            self.tok = Tokenizer.from_file(self.path)
        except Exception as e:  # the library raises a bare Exception for a bad file
            raise ConfigError(f"cannot read tokenizer file {path}: {e}") from None
        self.tok.no_truncation()  # we truncate, keeping the EOS
        self.tok.no_padding()
        eos = self._appended_special()
        if eos is None:
            eos = next((i for t in _EOS_TOKENS if (i := self.tok.token_to_id(t)) is not None), None)
        if eos is None:
            raise ConfigError(f"{path}: no EOS token (tried {list(_EOS_TOKENS)})")
        self.eos_id: int = eos
        pad = json.loads(Path(self.path).read_text()).get("padding") or {}
        pad_id = pad.get("pad_id")
        if pad_id is None:
            pad_id = next((i for t in _PAD_TOKENS if (i := self.tok.token_to_id(t)) is not None), 0)
        self.pad_id: int = int(pad_id)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.pool = "eos"

    def _appended_special(self) -> int | None:
        """The id the post-processor puts last (XLM-R's ``</s>``), if it adds any."""
        ids = self.tok.encode("").ids
        special = set(self.tok.get_added_tokens_decoder())
        return ids[-1] if ids and ids[-1] in special else None

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        eos = self.eos_id
        ids = (
            e.ids[:-1] if e.ids and e.ids[-1] == eos else e.ids
            for e in self.tok.encode_batch(texts)
        )
        return _pack(ids, len(texts), self.context_length, eos, self.pad_id)

    def __getstate__(self) -> dict:  # picklable for DataLoader workers
        return {"path": self.path, "context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["path"], state["context_length"])


def build_tokenizer(cfg: TokenizerConfig, context_length: int):
    if cfg.kind == "openai-bpe":
        return OpenAIBPETokenizer(context_length)
    if cfg.kind == "hf":
        assert cfg.path is not None  # TokenizerConfig.__post_init__ requires it
        return HFTokenizer(cfg.path, context_length)
    assert cfg.path is not None  # TokenizerConfig.__post_init__ requires it
    return SentencePieceTokenizer(cfg.path, context_length)
