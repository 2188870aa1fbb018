"""Property-based requests from the live server's own OpenAPI schema (schemathesis).

Every ``/api/v1`` operation (and health, metrics) gets generated requests with the admin token;
whatever they hold, the server must answer without a 5xx. The data plane's ``/v1`` routes have
their own tests (tests/transfer) and are left out: random upload sizes would allocate files.
"""

from __future__ import annotations

import schemathesis
from conftest import ADMIN, Api
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES_PER_OPERATION = 8


def test_no_server_errors_for_generated_requests(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {ADMIN}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/v1/"):
            continue
        tested.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                print(
                    "FAILING",
                    case.method,
                    case.path,
                    repr(case.body)[:500],
                    case.path_parameters,
                    case.query,
                )
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert "POST /api/v1/logs" in tested and "GET /api/v1/runs" in tested
