"""Quantization: fp32 vs int8 (``kubellm.runtime.serving.quantize``) on a model trained first.

A small Llama learns a synthetic corpus for a few hundred steps (random weights make greedy
choices fragile, so agreement would say little), is saved, then loaded twice through the
serving engine (``quantization: none`` and ``int8``). For each: tokens/s through the server's
scheduler with 16 sequences at once and with one, weight bytes, greedy outputs and perplexity on
held-out text. int4 on CPU goes through the same support check the server uses.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.figures import Check, FamilyResult, Plot, RunOptions, Table, Target, ratio
from benchmarks.inprocess import scheduler_run
from kubellm.contract.schema import ModelSource
from kubellm.contract.serving import Quantization

__all__ = ["run"]

MODEL = (
    "dummy://llama?hidden_size=192&num_hidden_layers=3&num_attention_heads=4&intermediate_size=512"
    "&vocab_size=512&max_position_embeddings=256&seed=3"
)
BATCH, LENGTH = 8, 48
SPEED_MODEL = (
    "dummy://llama?hidden_size=512&num_hidden_layers=8&num_attention_heads=8&intermediate_size=1376"
    "&vocab_size=2048&max_position_embeddings=256&seed=4"
)
"""Speed only (random weights): a model big enough for int8 matrix kernels to matter, as in goals.md."""
SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our robot", "the old man", "a small bird", "the pilot"]
VERBS = ["reads", "paints", "builds", "cleans", "sells", "finds", "moves", "counts"]
OBJECTS = ["a red box", "the blue door", "seven apples", "a long letter", "the green boat", "two chairs"]


def corpus(count: int, seed: int) -> list[str]:
    """Sentences of a tiny grammar, plus sums: patterns a small model learns in minutes."""
    chooser = random.Random(seed)
    lines = []
    for _ in range(count):
        if chooser.random() < 0.3:
            a, b = chooser.randint(1, 40), chooser.randint(1, 40)
            lines.append(f"{a} plus {b} is {a + b}.")
        else:
            lines.append(f"{chooser.choice(SUBJECTS)} {chooser.choice(VERBS)} {chooser.choice(OBJECTS)}.")
    return lines


def _blocks(tokenizer: Any, lines: list[str], length: int) -> torch.Tensor:
    ids = [token for line in lines for token in [*tokenizer.encode(line + "\n", add_special_tokens=False)]]
    usable = len(ids) // length * length
    return torch.tensor(ids[:usable]).view(-1, length)


def train(model: Any, blocks: torch.Tensor, steps: int, batch: int) -> list[float]:
    """AdamW on next-token prediction; the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        rows = blocks[torch.randint(0, len(blocks), (batch,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def perplexity(model: Any, blocks: torch.Tensor) -> float:
    """exp(mean next-token loss) over the held-out blocks."""
    with torch.inference_mode():
        losses = [
            float(model(input_ids=blocks[i : i + 8], labels=blocks[i : i + 8]).loss) for i in range(0, len(blocks), 8)
        ]
    return math.exp(sum(losses) / len(losses))


def _trained_folder(folder: Path, steps: int) -> dict[str, Any]:
    from kubellm.runtime.models.loading import load_model  # noqa: PLC0415

    loaded = load_model(MODEL)
    started = time.perf_counter()
    losses = train(loaded.model, _blocks(loaded.tokenizer, corpus(6000, seed=1), LENGTH), steps, batch=BATCH)
    seconds = time.perf_counter() - started
    loaded.model.save_pretrained(str(folder))
    loaded.tokenizer.save_pretrained(str(folder))
    parameters = int(sum(parameter.numel() for parameter in loaded.model.parameters()))
    return {
        "steps": steps,
        "seconds": seconds,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "parameters": parameters,
    }


def _tokens_per_second(engine: Any, prompts: list[str], tokens: int) -> tuple[list[list[int]], float]:
    scheduler_run(engine, [(prompt, 4) for prompt in prompts], len(prompts))  # warm-up at this batch size
    timing, outputs = scheduler_run(engine, [(prompt, tokens) for prompt in prompts], len(prompts))
    return outputs, timing.tokens_per_second


def _measure_mode(
    folder: Path, mode: Quantization, prompts: list[str], held_out: torch.Tensor, tokens: int
) -> dict[str, Any]:
    from kubellm.contract.serving import ServingConfig  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_transformers_engine  # noqa: PLC0415
    from kubellm.runtime.serving.settings import ServerSettings  # noqa: PLC0415

    settings = ServerSettings(model=ModelSource(uri=str(folder)), serving=ServingConfig(quantization=mode))
    engine = load_transformers_engine(settings)
    outputs, batched = _tokens_per_second(engine, prompts, tokens)
    single = sum(_tokens_per_second(engine, [prompt], tokens)[1] for prompt in prompts[:2]) / 2
    return {
        "outputs": outputs,
        "batched_tps": batched,
        "single_tps": single,
        "weight_bytes": engine.info.weight_bytes,
        "perplexity": perplexity(engine.model, held_out),
    }


def _speed_only(prompts: list[str], tokens: int) -> dict[str, dict[str, Any]]:
    """fp32 and int8 tokens/s and weight bytes of the larger random-weight model."""
    from kubellm.contract.serving import ServingConfig  # noqa: PLC0415
    from kubellm.runtime.serving.engine import load_engine  # noqa: PLC0415
    from kubellm.runtime.serving.settings import ServerSettings  # noqa: PLC0415

    figures: dict[str, dict[str, Any]] = {}
    precisions: tuple[Quantization, ...] = ("none", "int8")
    for mode in precisions:
        engine = load_engine(
            ServerSettings(model=ModelSource(uri=SPEED_MODEL), serving=ServingConfig(quantization=mode))
        )
        _, batched = _tokens_per_second(engine, prompts, tokens)
        figures[mode] = {"batched_tps": batched, "weight_bytes": engine.info.weight_bytes}
    return figures


def _int4_on_cpu() -> str:
    from kubellm.runtime.serving.quantize import QuantizationUnavailableError, check_supported  # noqa: PLC0415

    try:
        check_supported("int4", "cpu")
    except QuantizationUnavailableError as error:
        return str(error)
    return "supported"


def agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Share of positions where both greedy outputs chose the same token (up to the shorter one)."""
    pairs = [(a, b) for ref, oth in zip(reference, other, strict=True) for a, b in zip(ref, oth, strict=False)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def run(options: RunOptions) -> FamilyResult:
    """Train, then measure fp32 and int8."""
    torch.set_num_threads(options.threads)
    steps, clients, tokens = (40, 8, 16) if options.quick else (300, 16, 48)
    held_out_lines = corpus(400, seed=2)
    prompts = [" ".join(line.split()[:2]) for line in held_out_lines[:clients]]
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-quantization-") as scratch:
        folder = Path(scratch) / "model"
        trained = _trained_folder(folder, steps)
        from kubellm.runtime.models.loading import load_tokenizer  # noqa: PLC0415

        held_out = _blocks(load_tokenizer(str(folder)), held_out_lines, LENGTH)
        precisions: tuple[Quantization, ...] = ("none", "int8")
        modes: dict[str, dict[str, Any]] = {
            mode: _measure_mode(folder, mode, prompts, held_out, tokens) for mode in precisions
        }
    speed = _speed_only(prompts, tokens)
    return _result(modes, trained, _int4_on_cpu(), options, speed=speed, clients=clients, tokens=tokens)


def _result(
    modes: dict[str, dict[str, Any]],
    trained: dict[str, Any],
    int4: str,
    options: RunOptions,
    *,
    speed: dict[str, dict[str, Any]],
    clients: int,
    tokens: int,
) -> FamilyResult:
    fp32, int8 = modes["none"], modes["int8"]
    agreed = agreement(fp32["outputs"], int8["outputs"]) * 100
    quick = options.quick
    checks = [
        _versus(f"int8 / fp32 tokens/s, {clients} sequences at once", "batched_tps", modes, None if quick else 1.5),
        _versus("int8 / fp32 tokens/s, batch 1", "single_tps", modes, None),
        Check(
            "weights smaller by (fp32 bytes / int8 bytes)",
            ratio(fp32["weight_bytes"], int8["weight_bytes"]),
            "x",
            Target(2.4),
            int8["weight_bytes"] / 2**20,
            "fp32",
            fp32["weight_bytes"] / 2**20,
            "MiB",
            ours_name="int8",
        ),
        Check("greedy tokens agreeing with fp32", agreed, "%", None if quick else Target(95.0)),
        _versus("int8 / fp32 perplexity on held-out text", "perplexity", modes, None),
        _versus(
            f"int8 / fp32 tokens/s, {clients} sequences at once, larger random-weight model",
            "batched_tps",
            speed,
            None if quick else 1.5,
        ),
        _versus("int8 / fp32 weight bytes, larger random-weight model", "weight_bytes", speed, None),
    ]
    columns = ["precision", f"tok/s ({clients} at once)", "tok/s (batch 1)", "weight bytes", "perplexity", "note"]
    rows: list[list[str | float | int | None]] = [
        ["fp32", fp32["batched_tps"], fp32["single_tps"], fp32["weight_bytes"], fp32["perplexity"], ""],
        ["int8 (CPU)", int8["batched_tps"], int8["single_tps"], int8["weight_bytes"], int8["perplexity"], ""],
        ["int4", None, None, None, None, f"not run: {int4}"],
        ["fp32, larger model", speed["none"]["batched_tps"], None, speed["none"]["weight_bytes"], None, "speed only"],
        ["int8, larger model", speed["int8"]["batched_tps"], None, speed["int8"]["weight_bytes"], None, "speed only"],
    ]
    return FamilyResult(
        name="quantization",
        title="Quantization (CPU)",
        workload=(
            f"`{MODEL}` ({trained['parameters'] / 1e6:.1f}M parameters) trained {trained['steps']} steps "
            f"(batch {BATCH} x {LENGTH} tokens, lr 3e-3, "
            f"loss {trained['first_loss']:.2f} -> {trained['last_loss']:.2f}, "
            f"{trained['seconds']:.0f} s) on a synthetic corpus, then served by the engine with quantization "
            f"none and int8; {clients} held-out prompts, {tokens} greedy new tokens, through the server's "
            f"scheduler; perplexity on held-out text; {options.threads} torch thread(s). Speed is measured again "
            f"on a larger model with random weights, `{SPEED_MODEL}`, where int8 matrix kernels have more to do."
        ),
        tables=[Table("fp32 vs int8", columns, rows)],
        checks=checks,
        notes=[f"int4 on CPU: {int4}"],
        plots=[
            Plot(
                "Tokens/s (higher is better)",
                "tok/s",
                [f"{clients} at once", "batch 1", f"{clients} at once, larger model"],
                {
                    mode: [figures["batched_tps"], figures["single_tps"], speed[key]["batched_tps"]]
                    for mode, key, figures in (("fp32", "none", fp32), ("int8", "int8", int8))
                },
            ),
            Plot(
                "Weights (lower is better)",
                "MiB",
                ["weights"],
                {"fp32": [fp32["weight_bytes"] / 2**20], "int8": [int8["weight_bytes"] / 2**20]},
            ),
        ],
        data={
            "training": trained,
            "fp32": _public(fp32),
            "int8": _public(int8),
            "agreement_percent": agreed,
            "larger_model": speed,
        },
    )


_UNITS = {"batched_tps": "tok/s", "single_tps": "tok/s", "weight_bytes": "bytes", "perplexity": ""}


def _versus(figure: str, key: str, modes: dict[str, dict[str, Any]], bound: float | None) -> Check:
    int8, fp32 = float(modes["int8"][key]), float(modes["none"][key])
    target = None if bound is None else Target(bound)
    return Check(figure, ratio(int8, fp32), "x", target, int8, "fp32", fp32, _UNITS[key], ours_name="int8")


def _public(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in figures.items() if key != "outputs"}
