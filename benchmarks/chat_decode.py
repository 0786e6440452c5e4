"""Batch-1 decode speed: one streamed chat reply at a time, timed from its first text to its last.

Prefill (the prompt) is left out: the decode rate is the tokens after the first over the time
between the first and the last chunk that carried text. Tokens are counted from the usage the
server reports at the end of the stream, else from the chunks that carried text.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.load import NO_CACHE

__all__ = ["Reply", "streamed_chat"]


@dataclass(frozen=True)
class Reply:
    """One streamed reply: tokens, seconds to its first text, seconds from first to last text."""

    tokens: int
    ttft: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first over the time they took (NaN for a reply of one token)."""
        if self.tokens < 2 or self.decode_seconds <= 0:
            return float("nan")
        return (self.tokens - 1) / self.decode_seconds


def _body(model: str, message: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _content(event: dict[str, Any]) -> bool:
    return any((choice.get("delta") or {}).get("content") for choice in event.get("choices") or [])


def streamed_chat(url: str, model: str, message: str, max_tokens: int) -> Reply:
    """POST one greedy streamed chat completion to ``url`` and time its text."""
    started = time.perf_counter()
    first = last = math.nan
    chunks, usage = 0, None
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=_body(model, message, max_tokens), headers=NO_CACHE, timeout=600
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            if _content(event):
                last = time.perf_counter() - started
                first = last if chunks == 0 else first
                chunks += 1
            if event.get("usage"):
                usage = int(event["usage"]["completion_tokens"])
    return Reply(chunks if usage is None else usage, first, last - first)
