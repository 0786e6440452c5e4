"""llama.cpp as the serving engine (``serving.engine: llamacpp``): a GGUF file decoded on CPU.

The scheduler, sampling, stop sequences, response cache, metrics and OpenAI API are those of the
transformers engine; only the forward passes run in llama.cpp, through llama-cpp-python's C API.
On SmolLM2-135M with 2 cores llama.cpp decodes one sequence 4-5x faster than PyTorch does, and
continues to gain from batching (``benchmarks/results``).

- Every running sequence owns one of llama.cpp's sequence ids (``maxBatchSize`` of them) in one
  key/value cache shared by all (llama.cpp's unified cache). The cache holds the model's context
  (at most :data:`MAX_CONTEXT` tokens); a sequence joins the batch only when its prompt plus its
  ``max_tokens`` fit in what the running ones reserved, so the cache never overflows: a request
  waits for room instead.
- Every decoding step is one call for all rows, and the prompts admitted at that step ride along
  in the same call (in pieces of :data:`BATCH_TOKENS` tokens): a pass reads the weights once for
  both, where prefilling apart cost a fifth of the time at 16 clients. The logits come back as a
  tensor for the shared sampler.
- The tokenizer is transformers' reading of the same file, so token ids, chat templates and text
  are those of the transformers engine on the same model.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubellm.contract.serving import LLAMACPP_NEEDS_GGUF
from kubellm.runtime.models.gguf import is_gguf, read_gguf_header
from kubellm.runtime.models.sources import ModelSourceError, PathSource, parse_source
from kubellm.runtime.serving.batching import RowBatch, Sequence
from kubellm.runtime.serving.engine import EngineInfo, ServingEngine, log_loaded
from kubellm.runtime.serving.settings import ServerSettings, default_torch_threads

__all__ = ["BATCH_TOKENS", "MAX_CONTEXT", "LlamaBatch", "LlamaCppEngine", "load_llamacpp_engine"]

log = logging.getLogger(__name__)

MAX_CONTEXT = 32_768
"""Most tokens the shared key/value cache holds (a model with a longer context is served with this)."""
BATCH_TOKENS = 512
"""Most tokens llama.cpp runs in one call (longer prefills are split)."""
MISSING = "serving.engine llamacpp needs llama-cpp-python (the runtime image has it; pip install llama-cpp-python)"
_WARN = 3  # ggml_log_level: GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR = 4


@dataclass
class LlamaBatch:
    """Rows decoded together; each row's cache lives in llama.cpp under the sequence id its engine gave it."""

    sequences: list[Sequence]
    positions: list[int]
    """Each row's position of its next input token."""
    next_tokens: list[int]
    engine: LlamaCppEngine

    def __len__(self) -> int:
        return len(self.sequences)

    def filter(self, keep: list[int]) -> LlamaBatch:
        """Only the rows ``keep``; the others' caches and reservations are freed."""
        kept = set(keep)
        for row, sequence in enumerate(self.sequences):
            if row not in kept:
                self.engine.release(sequence)
        return LlamaBatch(
            [self.sequences[row] for row in keep],
            [self.positions[row] for row in keep],
            [self.next_tokens[row] for row in keep],
            self.engine,
        )

    def joined(self, other: RowBatch) -> LlamaBatch:
        """This batch's rows, then ``other``'s (no cache moves: each row keeps its sequence id)."""
        assert isinstance(other, LlamaBatch)
        return LlamaBatch(
            [*self.sequences, *other.sequences],
            [*self.positions, *other.positions],
            [*self.next_tokens, *other.next_tokens],
            self.engine,
        )

    def advance(self, tokens: list[int]) -> None:
        """The chosen tokens are the next inputs, one position further."""
        self.next_tokens = list(tokens)
        self.positions = [position + 1 for position in self.positions]


@dataclass(frozen=True)
class _Token:
    """One token of a llama.cpp call: its sequence id, position, id, and whether its logits are wanted."""

    seq_id: int
    position: int
    token: int
    logits: bool


class _Context:
    """A llama.cpp model and context, driven through the C API (only from the scheduler's thread)."""

    def __init__(self, path: Path, *, threads: int, sequences: int) -> None:
        import llama_cpp  # noqa: PLC0415  (only when the engine is chosen)

        self._lib: Any = llama_cpp
        _quiet_logs(llama_cpp)
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        if not self._model:
            raise ModelSourceError(f"{path.name}: llama.cpp cannot load this GGUF file")
        self.context_tokens = min(int(llama_cpp.llama_model_n_ctx_train(self._model)), MAX_CONTEXT)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_tokens
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = sequences
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ModelSourceError(f"{path.name}: llama.cpp cannot make a context of {self.context_tokens} tokens")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.end_tokens = frozenset(t for t in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, t))
        self.weight_bytes = int(llama_cpp.llama_model_size(self._model))

    def run(self, tokens: list[_Token]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Run ``tokens`` (in pieces of :data:`BATCH_TOKENS`); the logits of those that want them, in order."""
        rows = [self._run_piece(tokens[start : start + BATCH_TOKENS]) for start in range(0, len(tokens), BATCH_TOKENS)]
        return np.concatenate(rows) if rows else np.zeros((0, self.vocab_size), dtype=np.float32)

    def _run_piece(self, tokens: list[_Token]) -> np.ndarray[Any, np.dtype[np.float32]]:
        batch = self._batch
        batch.n_tokens = len(tokens)
        for index, item in enumerate(tokens):
            batch.token[index] = item.token
            batch.pos[index] = item.position
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = item.seq_id
            batch.logits[index] = item.logits
        status = int(self._lib.llama_decode(self._ctx, batch))
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        outputs = sum(item.logits for item in tokens)
        if outputs == 0:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        logits = self._lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(logits, shape=(outputs, self.vocab_size)).copy()

    def forget(self, seq_id: int) -> None:
        """Drop one sequence id's cache."""
        self._lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def clear(self) -> None:
        """Drop every sequence's cache."""
        self._lib.llama_memory_clear(self._memory, True)


class LlamaCppEngine(ServingEngine):
    """A GGUF model in llama.cpp, batched by the shared scheduler."""

    def __init__(self, context: _Context, tokenizer: Any, info: EngineInfo, *, sequences: int) -> None:
        super().__init__(tokenizer, info, adapters={}, max_positions=context.context_tokens)
        self._context = context
        self.eos_token_ids = context.end_tokens | _tokenizer_end(tokenizer)
        self._free_ids = list(range(sequences))
        self._owners: dict[Sequence, tuple[int, int]] = {}
        """Sequence -> (its llama.cpp sequence id, the cache tokens reserved for it)."""
        self._reserved = 0

    def reserve(self, sequence: Sequence) -> bool:
        """Give ``sequence`` a sequence id and room for its prompt and ``max_tokens``, if both are free."""
        need = len(sequence.prompt_ids) + sequence.params.max_tokens
        if not self._free_ids or self._reserved + need > self.max_positions:
            return False
        self._owners[sequence] = (self._free_ids.pop(), need)
        self._reserved += need
        return True

    def release(self, sequence: Sequence) -> None:
        """Free a sequence's id, cache and reservation."""
        owned = self._owners.pop(sequence, None)
        if owned is not None:
            seq_id, need = owned
            self._context.forget(seq_id)
            self._free_ids.append(seq_id)
            self._reserved -= need

    def reset(self) -> None:
        """Forget every sequence and clear the cache."""
        for sequence in list(self._owners):
            self.release(sequence)
        self._context.clear()

    def prefill(self, sequences: list[Sequence]) -> tuple[LlamaBatch, torch.Tensor]:
        """Run every prompt in one call (each under its own id); the logits of each prompt's last token."""
        logits = self._context.run(self._prompt_tokens(sequences))
        return self._fresh(sequences), torch.from_numpy(logits)

    def decode(self, batch: RowBatch) -> torch.Tensor:
        """One decoding step for every row, in one call."""
        assert isinstance(batch, LlamaBatch)
        return torch.from_numpy(self._context.run(self._next_tokens(batch)))

    def decode_joining(self, batch: RowBatch, sequences: list[Sequence]) -> tuple[LlamaBatch, torch.Tensor]:
        """The rows' next tokens and the new prompts in one call: one pass over the weights instead of two."""
        assert isinstance(batch, LlamaBatch)
        logits = self._context.run([*self._next_tokens(batch), *self._prompt_tokens(sequences)])
        return batch.joined(self._fresh(sequences)), torch.from_numpy(logits)

    def _prompt_tokens(self, sequences: list[Sequence]) -> list[_Token]:
        """Every prompt token under its sequence's id; logits only for each prompt's last one."""
        return [
            _Token(self._seq_id(sequence), position, token, position == len(sequence.prompt_ids) - 1)
            for sequence in sequences
            for position, token in enumerate(sequence.prompt_ids)
        ]

    def _next_tokens(self, batch: LlamaBatch) -> list[_Token]:
        return [
            _Token(self._seq_id(sequence), position, token, True)
            for sequence, position, token in zip(batch.sequences, batch.positions, batch.next_tokens, strict=True)
        ]

    def _fresh(self, sequences: list[Sequence]) -> LlamaBatch:
        """Prefilled sequences as a batch: each at its prompt's last token, whose logits were just computed."""
        positions = [len(sequence.prompt_ids) - 1 for sequence in sequences]
        return LlamaBatch(list(sequences), positions, [sequence.prompt_ids[-1] for sequence in sequences], self)

    def _seq_id(self, sequence: Sequence) -> int:
        owned = self._owners.get(sequence)
        if owned is None:  # the scheduler reserves before it prefills: this is a bug, not bad input
            raise RuntimeError("a sequence reached llama.cpp without a reserved sequence id")
        return owned[0]


def _tokenizer_end(tokenizer: Any) -> frozenset[int]:
    end = tokenizer.eos_token_id
    return frozenset([int(end)] if end is not None else [])


# --- loading ------------------------------------------------------------------------------


def load_llamacpp_engine(settings: ServerSettings) -> LlamaCppEngine:
    """Load ``settings.model`` (a GGUF file) into llama.cpp; raises ModelSourceError with a one-line reason."""
    started = time.monotonic()
    uri = settings.model.uri
    path = _gguf_path(uri, settings.model.revision)
    header = read_gguf_header(uri, path)  # a complete file of an architecture the tokenizer side reads
    _check_installed()
    threads = settings.torch_threads or default_torch_threads()
    sequences = settings.serving.limits.max_batch_size
    context = _Context(path, threads=threads, sequences=sequences)
    tokenizer = _tokenizer(path)
    info = EngineInfo(
        engine="llamacpp",
        uri=uri,
        revision=None,
        model_type=header.architecture,
        base_uri=None,
        quantization=settings.serving.quantization,
        device="cpu",
        weight_bytes=context.weight_bytes,
        load_seconds=time.monotonic() - started,
    )
    log_loaded(info, settings)
    return LlamaCppEngine(context, tokenizer, info, sequences=sequences)


def _gguf_path(uri: str, revision: str | None) -> Path:
    source = parse_source(uri, revision)
    if not isinstance(source, PathSource) or not is_gguf(source.path):
        raise ModelSourceError(f"{uri}: {LLAMACPP_NEEDS_GGUF}")
    if not source.path.is_file():
        raise ModelSourceError(f"{uri}: no GGUF file at {source.path}")
    return source.path


def _check_installed() -> None:
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelSourceError(MISSING)


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer  # noqa: PLC0415

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


_LOG_CALLBACK: Any = None
"""llama.cpp's log callback, kept alive for as long as the library may call it."""


def _quiet_logs(llama_cpp: Any) -> None:
    """llama.cpp's warnings and errors go to this module's log; its loading chatter is dropped."""
    global _LOG_CALLBACK  # noqa: PLW0603  (one callback per process, set once)
    if _LOG_CALLBACK is not None:
        return

    def forward(level: int, text: bytes, _: ctypes.c_void_p) -> None:
        if level in (_WARN, _WARN + 1) and text.strip():
            log.warning("llama.cpp: %s", text.decode("utf-8", "replace").strip())

    _LOG_CALLBACK = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
