"""Structured logs: one JSON object per line, extra fields merged."""

from __future__ import annotations

import json
import logging

from kubellm.runtime.serving.logs import JsonFormatter


def test_records_become_json_lines_with_their_fields() -> None:
    record = logging.LogRecord("kubellm", logging.INFO, __file__, 1, "model %s", ("loaded",), None)
    record.fields = {"quantization": "int8", "weight_bytes": 10}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "model loaded"
    assert payload["level"] == "info"
    assert (payload["quantization"], payload["weight_bytes"]) == ("int8", 10)
