"""Metric names the dashboard queries, labelled by model only (plus status on the request counter)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from kubellm.runtime.serving.metrics import ServerMetrics

EXPECTED = {
    "llm_requests",
    "llm_request_duration_seconds",
    "llm_active_requests",
    "llm_time_to_first_token_seconds",
    "llm_inter_token_latency_seconds",
    "llm_prompt_tokens",
    "llm_generation_tokens",
    "llm_queue_size",
    "llm_batch_size",
    "llm_cache_hits",
    "llm_cache_misses",
    "llm_cache_errors",
    "llm_model_weight_bytes",
}


def _families(metrics: ServerMetrics) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels.setdefault(family.name, set()).update(sample.labels)
    return labels


def test_names_and_bounded_labels() -> None:
    metrics = ServerMetrics("tiny")
    with metrics.track_request("tiny"):
        metrics.observe_batch(3)
        metrics.observe_queue(2)
        metrics.observe_tokens("tiny", 4, 5)
    metrics.count_response("tiny", 200)
    metrics.observe_loaded("int8", 1000)
    for counter in (metrics.cache_hits, metrics.cache_misses, metrics.cache_errors):
        counter.labels("tiny").inc()
    metrics.ttft.labels("tiny").observe(0.1)
    metrics.inter_token.labels("tiny").observe(0.01)
    families = _families(metrics)
    assert set(families) >= EXPECTED
    allowed = {"model", "status", "quantization", "le"}
    assert all(labels <= allowed for labels in families.values())
    text = metrics.exposition().decode()
    assert 'llm_requests_total{model="tiny",status="200"} 1.0' in text
    assert 'llm_cache_hits_total{model="tiny"} 1.0' in text


def test_each_server_has_its_own_registry() -> None:
    ServerMetrics("a")
    ServerMetrics("a")  # would raise "Duplicated timeseries" with a shared registry
