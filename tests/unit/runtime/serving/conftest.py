"""One tiny dummy model shared by the serving tests; offline, one torch thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch
from fastapi.testclient import TestClient
from huggingface_hub import constants

from kubellm.contract.serving import GenerationLimits, ServingConfig
from kubellm.runtime.serving.app import create_app
from kubellm.runtime.serving.engine import Engine, load_transformers_engine
from kubellm.runtime.serving.settings import ServerSettings

torch.set_num_threads(1)

TINY_MODEL = "dummy://llama?hidden_size=32&num_hidden_layers=2&num_attention_heads=4&seed=1"
SERVED_NAME = "tiny"

ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def tiny_settings(**overrides: object) -> ServerSettings:
    """Settings for the tiny model; ``limits`` may be a dict of GenerationLimits fields."""
    limits = overrides.pop("limits", {})
    assert isinstance(limits, dict)
    serving = ServingConfig(limits=GenerationLimits(**{"batch_wait_ms": 2, **limits}))
    if isinstance(overrides.get("model"), str):
        overrides["model"] = {"uri": overrides["model"]}
    fields: dict[str, object] = {"model": {"uri": TINY_MODEL}, "served_model_name": SERVED_NAME, "serving": serving}
    return ServerSettings.model_validate({**fields, **overrides})


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The tiny model, loaded once."""
    return load_transformers_engine(tiny_settings())


@pytest.fixture
def make_client(engine: Engine) -> ClientFactory:
    """A TestClient of an app serving the shared engine with the given settings overrides."""

    @contextmanager
    def factory(**overrides: object) -> Iterator[TestClient]:
        with TestClient(create_app(tiny_settings(**overrides), engine)) as client:
            yield client

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    """A client of the default app."""
    with make_client() as test_client:
        yield test_client
