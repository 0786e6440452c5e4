"""Tokenization with the loss masked on the prompt, truncation, the split and padding."""

from __future__ import annotations

import torch

from kubellm.runtime.models.tokenizer import build_byte_tokenizer
from kubellm.runtime.training.data import Example
from kubellm.runtime.training.encoding import IGNORE_INDEX, PadCollator, encode_all, encode_example, split

TOKENIZER = build_byte_tokenizer()
EOS = TOKENIZER.eos_token_id


def _ids(text: str) -> list[int]:
    return list(TOKENIZER(text, add_special_tokens=False)["input_ids"])


def test_prompt_tokens_are_masked_and_completion_ends_with_eos() -> None:
    encoded = encode_example(Example("x:1", "Question: 2+2?\nAnswer:", " 4"), TOKENIZER, max_length=64)
    prompt, completion = _ids("Question: 2+2?\nAnswer:"), _ids(" 4")
    assert encoded.input_ids == prompt + completion + [EOS]
    assert encoded.labels == [IGNORE_INDEX] * len(prompt) + completion + [EOS]
    assert encoded.trained_tokens == len(completion) + 1
    assert encoded.length == len(encoded.input_ids)


def test_plain_text_trains_on_every_token() -> None:
    encoded = encode_example(Example("x:1", "", "just text"), TOKENIZER, max_length=64)
    assert encoded.labels == encoded.input_ids == [*_ids("just text"), EOS]


def test_truncation_cuts_the_end_and_drops_rows_left_without_a_trained_token() -> None:
    long_prompt = Example("x:1", "word " * 40, " answer")
    fits = Example("x:2", "Q", " A")
    data = encode_all([long_prompt, fits], TOKENIZER, max_length=10)
    assert data.no_trained_tokens == 1
    assert len(data.examples) == 1
    assert data.lengths == [data.examples[0].length]
    cut = encode_example(Example("x:3", "", "word " * 40), TOKENIZER, max_length=10)
    assert len(cut.input_ids) == len(cut.labels) == 10
    assert cut.length > 10


def test_split_is_reproducible_and_holds_out_the_percent() -> None:
    examples = encode_all([Example(f"x:{i}", "", f"row {i}") for i in range(50)], TOKENIZER, 16).examples
    train, evaluation = split(examples, 10, seed=1)
    assert (len(train), len(evaluation)) == (45, 5)
    assert split(examples, 10, seed=1) == (train, evaluation)
    assert split(examples, 10, seed=2)[1] != evaluation
    assert split(examples[:3], 10, seed=1)[1] != []  # at least one held out
    assert split(examples, 0, seed=1)[1] == []


def test_collator_pads_inputs_labels_and_mask() -> None:
    short, long = encode_all([Example("x:1", "", "a"), Example("x:2", "Q", " long answer")], TOKENIZER, 32).examples
    batch = PadCollator(pad_token_id=TOKENIZER.pad_token_id)([short.features(), long.features()])
    width = len(long.input_ids)
    assert {name: tuple(tensor.shape) for name, tensor in batch.items()} == {
        "input_ids": (2, width),
        "labels": (2, width),
        "attention_mask": (2, width),
    }
    padding = width - len(short.input_ids)
    assert batch["input_ids"][0, -padding:].tolist() == [TOKENIZER.pad_token_id] * padding
    assert batch["labels"][0, -padding:].tolist() == [IGNORE_INDEX] * padding
    assert batch["attention_mask"][0].sum().item() == len(short.input_ids)
    assert batch["input_ids"].dtype == torch.long
