"""HF ``tokenizer.json`` (kind = "hf"): the file's own ids, EOS kept when truncated."""

import pickle

import numpy as np
import pytest

from metaclip.train.config import ConfigError, TokenizerConfig
from metaclip.train.tokenizer import build_tokenizer

tokenizers = pytest.importorskip("tokenizers")

LINES = ["a red circle", "a blue square", "ein roter Kreis", "un carré bleu", "a green triangle"]


def _write(tmp_path, post: bool, specials=("<s>", "<pad>", "</s>", "<unk>")) -> str:
    """A WordLevel tokenizer trained on a few lines; XLM-R's special ids (0-3) by default."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token=specials[-1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(LINES, trainers.WordLevelTrainer(special_tokens=list(specials)))
    if post:  # as XLM-R / XLM-V files: <s> text </s>
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    path = tmp_path / f"tokenizer{int(post)}.json"
    tok.save(str(path))
    return str(path)


def test_hf_tokenizer_gives_the_files_ids(tmp_path):
    from tokenizers import Tokenizer

    path = _write(tmp_path, post=True)
    tok = build_tokenizer(TokenizerConfig(kind="hf", path=path), context_length=8)
    assert (tok.pad_id, tok.eos_id, tok.pool) == (1, 2, "eos")
    assert tok.vocab_size == Tokenizer.from_file(path).get_vocab_size()
    ref = Tokenizer.from_file(path)
    out = tok(["a red circle", "un carré bleu", "a red circle " * 5])
    assert out.shape == (3, 8) and out.dtype == np.int64
    for row, text in zip(out[:2], ["a red circle", "un carré bleu"], strict=True):
        ids = ref.encode(text).ids  # <s> ... </s>, the file's ids
        assert ids[0] == 0 and ids[-1] == 2
        assert row[: len(ids)].tolist() == ids and (row[len(ids) :] == 1).all()
    assert out[2, 0] == 0 and out[2, -1] == 2 and (out[2] != 1).all()  # truncated: EOS kept
    again = pickle.loads(pickle.dumps(tok))  # DataLoader workers
    assert (again(["a blue square"]) == tok(["a blue square"])).all()


def test_hf_tokenizer_without_post_processor_appends_eos(tmp_path):
    path = _write(tmp_path, post=False, specials=("<pad>", "<|endoftext|>", "<unk>"))
    tok = build_tokenizer(TokenizerConfig(kind="hf", path=path), context_length=6)
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    row = tok("a green triangle")[0]
    assert row[3] == 1 and (row[4:] == 0).all() and 1 not in row[:3]


def test_hf_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer\.path"):
        TokenizerConfig(kind="hf")
    with pytest.raises(ConfigError, match="does not exist"):
        build_tokenizer(TokenizerConfig(kind="hf", path=str(tmp_path / "no.json")), 8)
    path = _write(tmp_path, post=False, specials=("[UNK]",))
    with pytest.raises(ConfigError, match="no EOS token"):
        build_tokenizer(TokenizerConfig(kind="hf", path=path), 8)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        build_tokenizer(TokenizerConfig(kind="hf", path=str(tmp_path / "bad.json")), 8)
