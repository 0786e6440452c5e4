"""Several LoRA adapters on one base model, chosen per request by the model name, in one batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from peft import LoraConfig, get_peft_model

from kubellm.contract.serving import ServedAdapter
from kubellm.runtime.models.compat import peft_deprecations_silenced
from kubellm.runtime.models.loading import load_model
from kubellm.runtime.serving.app import create_app
from kubellm.runtime.serving.batching import Scheduler, Sequence
from kubellm.runtime.serving.engine import load_engine
from kubellm.runtime.serving.sampling import SamplingParams
from tests.unit.runtime.serving.conftest import SERVED_NAME, TINY_MODEL, tiny_settings


def _save_adapter(folder: Path, seed: int) -> Path:
    import torch  # noqa: PLC0415

    base = load_model(TINY_MODEL).model
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with peft_deprecations_silenced():
        get_peft_model(base, config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def adapter_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("adapters")
    adapters = (
        ServedAdapter(name="alpha", uri=str(_save_adapter(root / "alpha", 1))),
        ServedAdapter(name="beta", uri=f"file://{_save_adapter(root / 'beta', 2)}"),
    )
    settings = tiny_settings(adapters=adapters)
    with TestClient(create_app(settings, load_engine(settings))) as client:
        yield client


def _greedy(client: TestClient, model: str) -> str:
    body = {"model": model, "prompt": "Hello there", "max_tokens": 8, "temperature": 0}
    response = client.post("/v1/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_adapters_are_listed_with_their_base(adapter_client: TestClient) -> None:
    data = adapter_client.get("/v1/models").json()["data"]
    assert [(entry["id"], entry["parent"]) for entry in data] == [
        (SERVED_NAME, None),
        ("alpha", SERVED_NAME),
        ("beta", SERVED_NAME),
    ]


def test_each_model_name_answers_with_its_own_weights(adapter_client: TestClient) -> None:
    answers = {name: _greedy(adapter_client, name) for name in (SERVED_NAME, "alpha", "beta")}
    assert len(set(answers.values())) == 3


def test_a_missing_adapter_folder_is_a_one_line_error(tmp_path: Path) -> None:
    from kubellm.runtime.models.sources import ModelSourceError  # noqa: PLC0415

    settings = tiny_settings(adapters=(ServedAdapter(name="gone", uri=str(tmp_path / "gone")),))
    with pytest.raises(ModelSourceError, match="adapter gone"):
        load_engine(settings)


def test_rows_of_different_adapters_in_one_batch_match_their_solo_answers(adapter_client: TestClient) -> None:
    engine = adapter_client.app.state.kubellm.service.engine  # type: ignore[attr-defined]
    names = [None, "alpha", "beta", "alpha"]

    def run(adapters: list[str | None]) -> list[list[int]]:
        sequences = [
            Sequence(engine.encode("Hi"), SamplingParams(max_tokens=5, temperature=0), adapter=name)
            for name in adapters
        ]
        scheduler = Scheduler(engine, max_batch_size=4, batch_wait_seconds=0.05)
        scheduler.start()
        scheduler.submit(sequences)
        deadline = time.monotonic() + 30
        while not all(sequence.finished for sequence in sequences) and time.monotonic() < deadline:
            time.sleep(0.005)
        scheduler.stop()
        return [sequence.output_ids for sequence in sequences]

    assert run(names) == [run([name])[0] for name in names]


def test_a_fine_tuned_adapter_is_served_beside_its_plain_base_model(tmp_path: Path) -> None:
    from kubellm.runtime.models.layout import OutputManifest, write_manifest  # noqa: PLC0415

    output = _save_adapter(tmp_path / "tuned", 3)
    write_manifest(output, OutputManifest(kind="adapter", method="lora", base_model=TINY_MODEL))
    settings = tiny_settings(model=str(output), base_model_name="tiny-base")
    with TestClient(create_app(settings, load_engine(settings))) as client:
        data = client.get("/v1/models").json()["data"]
        assert [(entry["id"], entry["root"]) for entry in data] == [
            (SERVED_NAME, str(output)),
            ("tiny-base", TINY_MODEL),
        ]
        tuned, base = _greedy(client, SERVED_NAME), _greedy(client, "tiny-base")
    with TestClient(create_app(tiny_settings(), load_engine(tiny_settings()))) as plain:
        assert base == _greedy(plain, SERVED_NAME)  # the base name answers without the adapter
    assert tuned != base


def test_a_base_model_name_needs_an_adapter_to_serve() -> None:
    from kubellm.runtime.models.sources import ModelSourceError  # noqa: PLC0415

    with pytest.raises(ModelSourceError, match="not an adapter"):
        load_engine(tiny_settings(base_model_name="tiny-base"))
