"""The models that write new rows for data augmentation: a server, or the base model in the training pod.

- :class:`ServerGenerator`: a ModelDeployment (or any OpenAI-compatible server) through
  ``/v1/chat/completions``, a few requests in flight, with the experiment client's retries and
  timeouts; the API key comes from ``$KUBELLM_AUGMENTATION_API_KEY``. A request that fails
  for good is an :class:`~kubellm.runtime.training.augmentation.Output` with an error (counted,
  not fatal); a server that cannot be reached at all stops the job (:class:`AugmentationError`),
  since every other request would fail the same way.
- :class:`LocalGenerator`: the base model loaded in-process, each instruction rendered as a
  user message with the tokenizer's chat template, left-padded batches decoded greedily
  (temperature 0) or sampled with a seed per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import torch

from kubellm.contract.training import AUGMENTATION_API_KEY_ENV, AugmentationConfig, AugmentationServer, TrainingRun
from kubellm.runtime.experiments.client import ClientSettings, EndpointClient, EndpointUnreachableError, RequestError
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.training.augmentation import Output, Request, RowGenerator, sampling_seed
from kubellm.runtime.training.data import render_chat
from kubellm.runtime.training.errors import AugmentationError

__all__ = ["LocalGenerator", "ServerGenerator", "open_generator", "server_request"]

SERVER_CONCURRENCY = 8
SERVER_BATCH = 32
LOCAL_BATCH = 8


def server_request(model: str, config: AugmentationConfig, seed: int, request: Request) -> dict[str, Any]:
    """The chat completion body of one request (its own seed, so repeated rows differ when sampling)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": request.instruction}],
        "max_tokens": config.max_tokens,
        "temperature": float(Decimal(config.temperature)),
        "seed": seed + request.number,
        "stream": False,
    }


@dataclass
class ServerGenerator:
    """Rows from an OpenAI-compatible server."""

    server: AugmentationServer
    config: AugmentationConfig
    seed: int
    api_key: str | None = None
    batch_size: int = SERVER_BATCH
    transport: httpx.AsyncBaseTransport | None = None
    """An HTTP transport to use instead of the network (tests)."""

    def generate(self, requests: Sequence[Request]) -> list[Output]:
        """Answers to a batch of requests, :data:`SERVER_CONCURRENCY` in flight."""
        return asyncio.run(self._generate(requests))

    async def _generate(self, requests: Sequence[Request]) -> list[Output]:
        settings = ClientSettings(base_url=self.server.url, api_key=self.api_key, max_connections=SERVER_CONCURRENCY)
        slots = asyncio.Semaphore(SERVER_CONCURRENCY)
        async with EndpointClient(settings, self.transport) as client:
            return list(await asyncio.gather(*(self._one(client, slots, request) for request in requests)))

    async def _one(self, client: EndpointClient, slots: asyncio.Semaphore, request: Request) -> Output:
        body = server_request(self.server.model, self.config, self.seed, request)
        async with slots:
            try:
                completion = await client.complete(body)
            except EndpointUnreachableError as error:
                raise AugmentationError(f"dataAugmentation: {error}") from None
            except RequestError as error:
                return Output(text=None, error=str(error))
        return Output(text=completion.text)


@dataclass
class LocalGenerator:
    """Rows from a model loaded in this process."""

    model: Any
    tokenizer: Any
    config: AugmentationConfig
    seed: int
    batch_size: int = LOCAL_BATCH

    def _prompt_ids(self, request: Request) -> list[int]:
        message = [{"role": "user", "content": request.instruction}]
        text = render_chat(self.tokenizer, message, generation_prompt=True)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        return list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])

    def _context_length(self) -> int | None:
        length = getattr(self.model.config, "max_position_embeddings", None)
        return int(length) if isinstance(length, int) else None

    def generate(self, requests: Sequence[Request]) -> list[Output]:
        """Answers to a batch of requests; an instruction too long for the model fails alone."""
        prompts = [self._prompt_ids(request) for request in requests]
        limit = self._context_length()
        fits = [limit is None or len(ids) + self.config.max_tokens <= limit for ids in prompts]
        texts = iter(self._decode([ids for ids, ok in zip(prompts, fits, strict=True) if ok], requests[0].number))
        too_long = Output(text=None, error="the instruction and maxTokens exceed the model's context length")
        return [Output(text=next(texts)) if ok else too_long for ok in fits]

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], first_number: int) -> list[str]:
        if not prompts:
            return []
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos or 0
        width = max(len(ids) for ids in prompts)
        device = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        temperature = float(Decimal(self.config.temperature))
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(self.seed + first_number)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        output = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.config.max_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            **sampling,
        )
        return [str(self.tokenizer.decode(row, skip_special_tokens=True)) for row in output[:, width:].tolist()]


@contextlib.contextmanager
def open_generator(job: TrainingRun) -> Iterator[RowGenerator]:
    """The job's generator: its resolved server, else the base model (loaded here, freed on exit)."""
    config = job.data_augmentation
    if config is None:
        raise ValueError("the job has no dataAugmentation")
    seed = sampling_seed(job)
    if job.augmentation_server is not None:
        yield ServerGenerator(job.augmentation_server, config, seed, os.environ.get(AUGMENTATION_API_KEY_ENV) or None)
        return
    loaded = load_model(job.base_model)
    model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    try:
        yield LocalGenerator(model, loaded.tokenizer, config, seed)
    finally:
        del model, loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
