"""schemathesis against the app's OpenAPI: no generated request may get a 5xx.

Cases come from schemathesis' strategies driven by hypothesis directly (its pytest plugin does
not support the pytest this project pins); each case is sent to the ASGI app in-process.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from kubellm.runtime.serving.app import create_app
from kubellm.runtime.serving.engine import Engine
from tests.unit.runtime.serving.conftest import SERVED_NAME, tiny_settings


def test_no_generated_request_gets_a_server_error(engine: Engine) -> None:
    app = create_app(tiny_settings(limits={"max_tokens": 8}), engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the app's OpenAPI document is invalid"

    @given(data=st.data())
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy())
        if isinstance(case.body, dict) and data.draw(st.booleans()):  # reach past the model-name check too
            case.body = {**case.body, "model": SERVED_NAME, "max_tokens": data.draw(st.integers(-1, 9))}
        response = case.call()
        assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"

    check()
