"""A real tokenizer built offline: byte-level BPE trained on a small built-in corpus.

Dummy models need a tokenizer that behaves like a production one (byte-level, so any text
round-trips exactly; special tokens; a chat template) without a download. Training a BPE on a
few kilobytes takes milliseconds and is deterministic, so the same vocabulary size always gives
the same tokenizer and a saved adapter stays valid for the base it was trained on.

The chat template is ChatML (``<|im_start|>role\\ncontent<|im_end|>``); ``<|endoftext|>`` is
both the beginning and the end of text, ``<|pad|>`` pads.
"""

from __future__ import annotations

import functools
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from kubellm.runtime.models.sources import ModelSourceError

__all__ = [
    "BOS_EOS_TOKEN",
    "CHAT_END_TOKEN",
    "CHAT_TEMPLATE",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "build_byte_tokenizer",
    "minimum_vocab_size",
    "special_token_id",
]

BOS_EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
CHAT_START_TOKEN = "<|im_start|>"
CHAT_END_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (BOS_EOS_TOKEN, PAD_TOKEN, CHAT_START_TOKEN, CHAT_END_TOKEN)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_FAST_TOKENIZER: Any = PreTrainedTokenizerFast  # its constructor is untyped
_BYTE_ALPHABET = len(pre_tokenizers.ByteLevel.alphabet())

# Plain English, digits and punctuation: enough to learn the common merges of everyday text.
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
    "Question: What is the capital of France? Answer: The capital of France is Paris.",
    "Instruction: Summarize the following text in one sentence. Response: It is about models.",
    "Hello, how are you today? I am fine, thank you. What would you like to talk about?",
    "The cat sat on the mat. The dog sleeps in the sun. Birds sing in the morning and at night.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 256 1000. One plus two is three.",
    "def main():\n    print('hello world')\n    return 0\n",
    '{"prompt": "Translate to French: cheese", "response": "fromage"}',
    "Language models predict the next token. Training reduces the loss on the data set.",
    "user\nWhat is the weather like?\nassistant\nIt is sunny and warm, with a light breeze.\n",
    "red green blue yellow orange purple black white small large fast slow happy sad",
    "In the beginning there was text, and the text was tokenized into bytes and merged into words.",
)


def minimum_vocab_size() -> int:
    """The smallest vocabulary a byte-level tokenizer can have: 256 bytes plus the special tokens."""
    return _BYTE_ALPHABET + len(SPECIAL_TOKENS)


def special_token_id(token: str) -> int:
    """The id of a special token: the BPE trainer numbers them first, in :data:`SPECIAL_TOKENS` order."""
    return SPECIAL_TOKENS.index(token)


@functools.cache
def _trained_tokenizer_json(vocab_size: int) -> str:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    return tokenizer.to_str()


def build_byte_tokenizer(vocab_size: int = 512, model_max_length: int = 2048) -> PreTrainedTokenizerBase:
    """A fresh byte-level BPE tokenizer with at most ``vocab_size`` tokens and a chat template."""
    if vocab_size < minimum_vocab_size():
        raise ModelSourceError(
            f"vocab_size {vocab_size} is too small for a byte-level tokenizer; use at least {minimum_vocab_size()}"
        )
    tokenizer: PreTrainedTokenizerBase = _FAST_TOKENIZER(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        bos_token=BOS_EOS_TOKEN,
        eos_token=BOS_EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[CHAT_START_TOKEN, CHAT_END_TOKEN],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )
    return tokenizer
