"""The toy world's word-level vocabulary and tokenizers (shared by the tiny LLaVA and the tiny CLIP)."""

from __future__ import annotations

from lmmsae.datasets.shapes import BACKGROUND_ADJECTIVES, COLORS, SHAPES, SIZES

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = [PAD, BOS, EOS, UNK, IMAGE]  # ids 0..4
WORDS = ["a", *SIZES, *COLORS, *SHAPES, "at", "in", "the", "top", "bottom", "left", "right", "center",
         "and", "is", "there", "?", "yes", "no", "on", "background",
         *dict.fromkeys(BACKGROUND_ADJECTIVES.values())]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}


def build_tokenizer(kind: str = "llava"):
    """A PreTrainedTokenizerFast over VOCAB: lowercasing, whitespace split, unknown words -> <unk>.

    kind="llava": prepends <s> (the LM's BOS); kind="clip": wraps text as <s> ... </s> (the CLIP text
    tower pools at </s>). The decoder joins words with single spaces.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab=dict(VOCAB), unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    if kind == "llava":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, VOCAB[BOS])])
    elif kind == "clip":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
            special_tokens=[(BOS, VOCAB[BOS]), (EOS, VOCAB[EOS])])
    else:
        raise ValueError(f"kind must be 'llava' or 'clip', not {kind!r}")
    kwargs = {"extra_special_tokens": {"image_token": IMAGE}} if kind == "llava" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=256 if kind == "llava" else 32, padding_side="right", **kwargs)
