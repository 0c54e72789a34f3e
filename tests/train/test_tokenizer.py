"""SentencePiece: trained from text files through the CLI, padded/truncated, EOS known."""

from click.testing import CliRunner

from metaclip.train.cli import cli
from metaclip.train.tokenizer import SentencePieceTokenizer


def test_train_tokenizer_cli_and_encode(tmp_path, shapes):
    corpus = tmp_path / "corpus.txt"
    lines = ["a red circle", "ein roter Kreis", "un cercle rouge", "赤い丸", "a blue square"]
    corpus.write_text("\n".join(lines * 50))
    result = CliRunner().invoke(
        cli, ["tokenizer", str(corpus), "-o", str(tmp_path / "sp"), "--vocab-size", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "eos id 3" in result.output

    tok = SentencePieceTokenizer(tmp_path / "sp.model", context_length=24)
    assert (tok.eos_id, tok.pad_id) == (3, 0)
    out = tok(["ein roter Kreis", "赤い丸", "a red circle " * 10])
    assert out.shape == (3, 24) and out.dtype.name == "int64"
    for row, text in zip(out[:2], ["ein roter Kreis", "赤い丸"], strict=True):
        n = int((row == tok.eos_id).nonzero()[0][0])
        assert tok.sp.decode(row[:n].tolist()) == text  # round trip, then EOS, then padding
        assert (row[n + 1 :] == tok.pad_id).all()
    assert out[2, -1] == tok.eos_id and (out[2] != tok.pad_id).all()  # truncated keeps EOS


def test_tokenizer_rejects_missing_model(tmp_path):
    import pytest

    from metaclip.train.config import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "nope.model", 77)


def test_openai_bpe_matches_open_clip():
    import pytest

    open_clip = pytest.importorskip("open_clip")
    from metaclip.train.tokenizer import OpenAIBPETokenizer

    texts = ["a photo of a cat", "A Dog in the SNOW!", "word " * 100]
    ours = OpenAIBPETokenizer(77)(texts)
    theirs = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    assert (ours == theirs).all()
    assert OpenAIBPETokenizer(77).pool == "argmax"
