"""Property-based run over the served OpenAPI document: no input makes the server fail.

Schemathesis generates requests for every operation from /openapi.json (valid and invalid
bodies, parameters and headers); each must be answered without a 5xx. Its pytest plugin does not
load under pytest 9, so the run uses its Python API with Hypothesis directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import ADMIN_KEY, LiveServer

pytestmark = pytest.mark.slow
GENERATING = {"/v1/chat/completions", "/v1/completions"}


def test_no_server_errors(live_server: LiveServer, db_url: str) -> None:
    # PostgreSQL is the stricter backend (typed columns, 32-bit integers): the full run there;
    # half as many cases per operation on SQLite keeps the suite within its time budget.
    examples = 30 if db_url.startswith("postgresql") else 15
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            # Bound generation so a random max_tokens cannot make the run crawl.
            if isinstance(case.body, dict) and operation.path in GENERATING:
                for field in ("max_tokens", "max_completion_tokens"):
                    if isinstance(case.body.get(field), int) and case.body[field] > 16:
                        case.body[field] = 16
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=[not_a_server_error]
            )

        try:
            check()
        except BaseException as exc:  # say what the server logged, to diagnose a rare failure
            log = live_server.log.read_text()[-4000:]
            raise AssertionError(f"{operation.label} failed; server log:\n{log}") from exc
