"""Request validation, response shapes and SSE framing."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from kubellm.runtime.serving.protocol import (
    DONE_EVENT,
    ChatRequest,
    CompletionRequest,
    Usage,
    error_body,
    sse_event,
    usage_chunk,
)


def test_sse_events_are_data_lines_ending_with_a_blank_line() -> None:
    event = sse_event({"a": "é"})
    assert event == 'data: {"a":"é"}\n\n'
    assert json.loads(event.removeprefix("data: "))["a"] == "é"
    assert DONE_EVENT == "data: [DONE]\n\n"


def test_the_usage_chunk_has_no_choices_and_totals() -> None:
    chunk = usage_chunk("id", "m", "chat.completion.chunk", Usage(prompt_tokens=3, completion_tokens=4))
    assert chunk["choices"] == []
    assert chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_errors_have_the_openai_shape() -> None:
    assert error_body("bad", "invalid_request_error", "c", "n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "c"}
    }


def test_stop_may_be_a_string_or_a_list() -> None:
    assert CompletionRequest(model="m", prompt="p", stop="x").stop_sequences() == ("x",)
    assert CompletionRequest(model="m", prompt="p", stop=["a", "b"]).sampling(3).stop == ("a", "b")


def test_chat_prefers_max_completion_tokens_and_joins_text_parts() -> None:
    request = ChatRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "max_completion_tokens": 9,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        }
    )
    assert request.requested_max_tokens() == 9
    assert request.message_dicts() == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize("field", [{"temperature": 3}, {"top_p": 0}, {"prompt": 5}])
def test_out_of_range_sampling_is_rejected(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "p", **field})
