"""The offline byte-level tokenizer: exact round trips, special tokens, chat template, reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from kubellm.runtime.models.sources import ModelSourceError
from kubellm.runtime.models.tokenizer import (
    BOS_EOS_TOKEN,
    CHAT_END_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    build_byte_tokenizer,
    minimum_vocab_size,
    special_token_id,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "héllo wörld, ça va? 日本語 🤖 \t tabs\nand newlines  ",
    "",
    "   leading spaces and <|not a special token|>",
]


@pytest.mark.parametrize("text", TEXTS)
def test_any_text_round_trips_exactly(text: str) -> None:
    tokenizer = build_byte_tokenizer()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_merges_make_common_words_shorter_than_bytes() -> None:
    tokenizer = build_byte_tokenizer()
    text = "The capital of France is Paris."
    assert len(tokenizer(text)["input_ids"]) < len(text.encode()) / 2


def test_special_tokens_have_fixed_ids() -> None:
    tokenizer = build_byte_tokenizer(300)
    assert tokenizer.bos_token == tokenizer.eos_token == BOS_EOS_TOKEN
    assert tokenizer.pad_token == PAD_TOKEN
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == special_token_id(token)
    assert tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"] == [special_token_id(CHAT_END_TOKEN)]


def test_vocabulary_size_is_an_upper_bound_and_reproducible() -> None:
    small, large = build_byte_tokenizer(300), build_byte_tokenizer(1024)
    assert len(small) == 300
    assert 300 < len(large) <= 1024
    assert build_byte_tokenizer(300).get_vocab() == small.get_vocab()


def test_too_small_vocabulary_is_refused() -> None:
    with pytest.raises(ModelSourceError, match=f"at least {minimum_vocab_size()}"):
        build_byte_tokenizer(256)


def test_chat_template_renders_chatml() -> None:
    tokenizer = build_byte_tokenizer()
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert isinstance(prompt, str)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_saved_tokenizer_loads_back_with_auto_tokenizer(tmp_path: Path) -> None:
    tokenizer = build_byte_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]
    assert loaded.pad_token == PAD_TOKEN
    assert loaded.chat_template == tokenizer.chat_template
