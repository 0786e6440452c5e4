"""schemathesis against the server's OpenAPI, over HTTP: no 5xx, and every answer as documented.

Cases come from schemathesis' strategies driven by hypothesis directly (its pytest plugin does
not support the pytest this project pins). Each response is checked against the document:
its status is documented, its content type and body match the documented ones.
"""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import RecordFigure
from tests.reliability.test_server_harness import AREA, NAME, server_settings, serving

EXAMPLES = 150
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(figure: RecordFigure) -> None:
    server_errors: list[str] = []
    violations: list[str] = []
    statuses: Counter[int] = Counter()
    with serving(server_settings(max_tokens=8)) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "the server's OpenAPI document is invalid"

        @given(data=st.data())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(data: st.DataObject) -> None:
            operation = data.draw(st.sampled_from(operations))
            case = data.draw(operation.as_strategy())
            if isinstance(case.body, dict) and data.draw(st.booleans()):  # reach past the model-name check too
                case.body = {**case.body, "model": NAME, "max_tokens": data.draw(st.integers(-1, 9))}
            response = case.call(timeout=60)
            statuses[response.status_code] += 1
            where = f"{case.method} {case.path} -> {response.status_code}"
            if response.status_code >= 500:
                server_errors.append(f"{where}: {response.text[:200]}")
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except BaseExceptionGroup as failure:  # the checks that failed
                violations.append(f"{where}: {' '.join(str(failure).split())[:300]}")

        check()
    print(f"statuses: {dict(sorted(statuses.items()))}")
    figure(AREA, f"schemathesis: 5xx answers in {EXAMPLES} cases", len(server_errors), target="0", ok=not server_errors)
    figure(AREA, "schemathesis: answers breaking the OpenAPI", len(violations), target="0", ok=not violations)
    assert not server_errors, server_errors[:5]
    assert not violations, violations[:5]
