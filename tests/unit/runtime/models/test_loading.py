"""Loading from every source: dummy, full-model and adapter folders, PVC paths, and Hub failures."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from peft import LoraConfig, PeftModel, get_peft_model

from kubellm.contract.schema import ModelSource
from kubellm.runtime.models.compat import peft_deprecations_silenced
from kubellm.runtime.models.hub import explain_hub_error
from kubellm.runtime.models.layout import OutputManifest, read_manifest, write_manifest
from kubellm.runtime.models.loading import load_model, load_tokenizer
from kubellm.runtime.models.quantization import QuantizationUnavailableError, four_bit_config
from kubellm.runtime.models.sources import ModelSourceError

BASE = "dummy://llama?hidden_size=32&num_attention_heads=2&seed=5"


def _logits(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    inputs = tokenizer("a small test", return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        return model(**inputs).logits  # type: ignore[no-any-return]


def test_dummy_source_loads_with_tokenizer_and_dtype() -> None:
    loaded = load_model(ModelSource(uri=BASE), dtype=torch.bfloat16)
    assert loaded.model_type == "llama"
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.tokenizer.decode(loaded.tokenizer("round trip")["input_ids"]) == "round trip"
    assert load_tokenizer(BASE).get_vocab() == loaded.tokenizer.get_vocab()


def test_saved_model_folder_loads_from_file_and_pvc_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_model(BASE, dtype=torch.float32)
    folder = tmp_path / "claim" / "model"
    original.model.save_pretrained(folder)
    original.tokenizer.save_pretrained(folder)
    from_file = load_model(f"file://{folder}", dtype=torch.float32)
    assert torch.allclose(_logits(from_file.model, from_file.tokenizer), _logits(original.model, original.tokenizer))
    monkeypatch.setenv("KUBELLM_PVC_ROOT", str(tmp_path))
    from_pvc = load_model("pvc://claim/model", dtype=torch.float32)
    assert from_pvc.model_type == "llama"


def _save_adapter(folder: Path, manifest: bool) -> torch.Tensor:
    base = load_model(BASE, dtype=torch.float32)
    with peft_deprecations_silenced():
        adapted = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # a trained-looking adapter, not a no-op
    adapted.save_pretrained(str(folder), save_embedding_layers=False)
    base.tokenizer.save_pretrained(folder)
    if manifest:
        write_manifest(folder, OutputManifest(kind="adapter", method="lora", base_model=BASE))
    return _logits(adapted, base.tokenizer)


def test_adapter_folder_loads_its_base_then_the_adapter(tmp_path: Path) -> None:
    expected = _save_adapter(tmp_path, manifest=True)
    loaded = load_model(str(tmp_path), dtype=torch.float32)
    assert isinstance(loaded.model, PeftModel)
    assert loaded.base_uri == BASE
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer), expected, atol=1e-5)


def test_adapter_of_a_dummy_base_needs_the_manifest(tmp_path: Path) -> None:
    _save_adapter(tmp_path, manifest=False)
    with pytest.raises(ModelSourceError, match="the adapter names no base model"):
        load_model(str(tmp_path))


def test_adapter_naming_a_hub_base_loads_it_from_the_hub(tmp_path: Path) -> None:
    _save_adapter(tmp_path, manifest=False)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/base"}))
    with pytest.raises(ModelSourceError, match=r"^hf://org/base: not in the local cache"):
        load_model(str(tmp_path))


def test_manifest_round_trip(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    write_manifest(tmp_path, OutputManifest(kind="model", method="full", base_model="hf://org/x", base_revision="v1"))
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert (manifest.kind, manifest.base_model, manifest.base_revision) == ("model", "hf://org/x", "v1")
    assert json.loads((tmp_path / "kubellm-output.json").read_text())["baseModel"] == "hf://org/x"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: _touch(root / "weights.bin"), "is a file"),
        (lambda root: root, "no model in"),
    ],
)
def test_unusable_paths_fail_with_one_line(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ModelSourceError, match=message):
        load_model(f"file://{path}")


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_hub_model_missing_offline_says_so() -> None:
    with pytest.raises(ModelSourceError) as error:
        load_model("hf://kubellm-tests/not-cached-anywhere")
    assert "not in the local cache and the Hub cannot be reached" in str(error.value)
    assert str(error.value).startswith("hf://kubellm-tests/not-cached-anywhere: ")


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/x"))


def _wrapped(cause: Exception) -> OSError:
    """How transformers reports hub errors: an OSError raised from the typed one."""
    try:
        try:
            raise cause
        except Exception as inner:
            raise OSError("You are trying to access a gated repo.\nMake sure to have access.") from inner
    except OSError as outer:
        return outer


def test_gated_model_without_token_asks_for_token_secret_ref() -> None:
    error = explain_hub_error("hf://org/x", _wrapped(GatedRepoError("403 gated", response=_response(403))))
    assert str(error) == (
        "hf://org/x: it is gated: set tokenSecretRef (the HF_TOKEN environment variable) to a token with access"
    )


def test_gated_model_with_token_says_the_token_lacks_access(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    error = explain_hub_error("hf://org/x", _wrapped(GatedRepoError("403 gated", response=_response(403))))
    assert "token in HF_TOKEN has no access" in str(error)


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (RepositoryNotFoundError("404", response=_response(404)), "repository not found, or private"),
        (LocalEntryNotFoundError("no cache"), "not in the local cache"),
        (OSError("disk on fire\nmore detail"), "cannot load: disk on fire"),
    ],
)
def test_hub_errors_become_one_line(cause: Exception, message: str) -> None:
    error = explain_hub_error("hf://org/x", _wrapped(cause) if not isinstance(cause, OSError) else cause)
    assert message in str(error)
    assert "\n" not in str(error)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_four_bit_needs_a_gpu() -> None:
    with pytest.raises(QuantizationUnavailableError, match="qlora needs a CUDA GPU"):
        four_bit_config()
