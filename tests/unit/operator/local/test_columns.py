"""``kubectl get`` columns for local runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.local.columns import age, format_table, header, json_path, row

BODY = {
    "metadata": {"name": "job", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"baseModel": {"uri": "dummy://llama"}, "training": {"method": "lora"}},
    "status": {
        "conditions": [
            {"type": "Failed", "status": "False", "reason": "Training"},
            {"type": "Succeeded", "status": "Unknown", "reason": "Training"},
        ],
        "progress": {"percent": 40, "loss": 1.234567},
        "evaluation": {"scorer": "exact", "rows": 8, "before": {"score": 0.125, "correct": 1}},
    },
}


def test_json_path_reads_fields_and_condition_filters() -> None:
    assert json_path(BODY, ".status.progress.percent") == 40
    assert json_path(BODY, '.status.conditions[?(@.type=="Succeeded")].status') == "Unknown"
    assert json_path(BODY, '.status.conditions[?(@.type=="Ready")].status') is None
    assert json_path(BODY, ".status.output.uri") is None


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (187, "3m7s"), (900, "15m"), (7500, "2h5m"), (90000, "1d1h")]
)
def test_ages_read_like_kubectl(seconds: float, shown: str) -> None:
    assert age(seconds) == shown


def test_a_row_follows_the_crd_printer_columns() -> None:
    now = datetime(2026, 1, 1, 0, 0, 42, tzinfo=UTC)
    assert header(ftj.INFO) == ["NAME", "SUCCEEDED", "REASON", "MODEL", "METHOD", "PROGRESS", "LOSS", "TASK", "AGE"]
    # TASK (the score after training) stays empty until training is over, as kubectl prints it
    assert row(ftj.INFO, BODY, now) == ["job", "Unknown", "Training", "dummy://llama", "lora", "40", "1.235", "", "42s"]
    lines = format_table([header(ftj.INFO), row(ftj.INFO, BODY, now)])
    assert lines[0].index("SUCCEEDED") == lines[1].index("Unknown")
