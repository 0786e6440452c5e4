"""GGUF files for tests, written in milliseconds: a tiny Llama, a file of another architecture, a cut copy.

:func:`write_tiny_llama_gguf` writes a ``dummy://llama`` model (random weights, byte-level BPE
tokenizer with a chat template) the way llama.cpp's converter lays a Llama out (tensor names,
the rotary permutation of the query and key projections, the tokenizer as ``gpt2`` BPE), so a
conversion back through transformers must give the same logits. It lets the conversion, the
cache and the error paths be tested without the 98 MB SmolLM2 file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import MODEL_ARCH, GGUFWriter, TokenType, get_tensor_name_map

from kubellm.runtime.models.dummy import DummyModel, build_dummy_model
from kubellm.runtime.models.sources import DummySource, parse_source
from kubellm.runtime.models.tokenizer import SPECIAL_TOKENS

__all__ = ["TINY_LLAMA_URI", "tiny_llama", "truncated_copy", "write_gguf_of_architecture", "write_tiny_llama_gguf"]

TINY_LLAMA_URI = "dummy://llama?seed=7"


def tiny_llama() -> DummyModel:
    """The model :func:`write_tiny_llama_gguf` writes (the same weights every time)."""
    source = parse_source(TINY_LLAMA_URI)
    assert isinstance(source, DummySource)
    return build_dummy_model(source)


def write_tiny_llama_gguf(path: Path) -> DummyModel:
    """Write :func:`tiny_llama` as a float32 GGUF file at ``path``; returns the model written."""
    built = tiny_llama()
    config: Any = built.model.config
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, built)
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, weight in built.model.state_dict().items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, name
        writer.add_tensor(gguf_name, _llama_cpp_layout(name, weight, config))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return built


def _add_tokenizer(writer: GGUFWriter, built: DummyModel) -> None:
    state = json.loads(built.tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in state["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if t in SPECIAL_TOKENS else TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(built.tokenizer.bos_token_id)
    writer.add_eos_token_id(built.tokenizer.eos_token_id)
    writer.add_pad_token_id(built.tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(built.tokenizer.chat_template)


def _llama_cpp_layout(name: str, weight: torch.Tensor, config: Any) -> np.ndarray[Any, Any]:
    """llama.cpp stores q/k rows interleaved for its rotary kernel; transformers undoes it on load."""
    array = weight.detach().to(torch.float32).numpy()
    if name.endswith("q_proj.weight"):
        return _permute(array, config.num_attention_heads)
    if name.endswith("k_proj.weight"):
        return _permute(array, config.num_key_value_heads)
    return array


def _permute(weights: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_gguf_of_architecture(path: Path, architecture: str) -> Path:
    """A well-formed GGUF file claiming ``architecture``, with one small tensor."""
    writer = GGUFWriter(path, architecture)
    writer.add_name(f"tiny-{architecture}")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def truncated_copy(source: Path, destination: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes, as a download cut short would leave them."""
    with source.open("rb") as whole:
        destination.write_bytes(whole.read(int(source.stat().st_size * fraction)))
    return destination
