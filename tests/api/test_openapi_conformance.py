"""The OpenAPI document tells the truth: generated requests (schemathesis) against a real
`mlgate serve` get only documented status codes, bodies of the documented shape and
content type, and never a 5xx; a 405 lists every method the path serves.

Clients generated from /openapi.json (openapi-generator, Kiota, ...) rely on each of
these: an undocumented 429 or a /v2 error in the /v1 envelope's place breaks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks as st_checks
from schemathesis.core.failures import FailureGroup

from tests.conftest import POSTGRES_URL, postgres_schema
from tests.servers import LiveServer, live_server_with_admin

#: Operations that would take the test's own credentials away (disable the admin user,
#: change or revoke its key, end its sessions); their own tests cover them.
SELF_HARMING = [
    ("PATCH", "/v1/admin/users/{user_id}"),
    ("POST", "/v1/admin/users/{user_id}/revoke-sessions"),
    ("PATCH", "/v1/admin/api-keys/{key_id}"),
    ("DELETE", "/v1/admin/api-keys/{key_id}"),
]

#: What every generated request is held to (the data-acceptance checks are left out:
#: the API checks more than a schema can say, e.g. a model's number of features).
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server on SQLite, then on PostgreSQL (which refuses what SQLite lets through,
    NUL characters in text for one). Rate limits off so that generated requests reach
    the routes (a 429 is documented on every authenticated route, and tested in
    tests/ratelimit)."""
    workdir = tmp_path_factory.mktemp("openapi")
    settings = {"MLGATE_RATE_LIMIT__ENABLED": "false"}
    with ExitStack() as stack:
        if request.param == "postgresql":
            schema = stack.enter_context(postgres_schema())
            settings["MLGATE_DATABASE_URL"] = POSTGRES_URL
            settings["MLGATE_DATABASE__SCHEMA_NAME"] = schema
        yield stack.enter_context(live_server_with_admin(workdir, ["ids", "iot"], **settings))


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> Any:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    for method, path in SELF_HARMING:
        schema = schema.exclude(method=method, path=path)
    return schema


#: Generated requests per operation (a minute for the whole API on the CI machine).
EXAMPLES = 15


def test_every_answer_is_documented(api_schema: Any, server: LiveServer) -> None:
    """Every operation, with generated parameters and bodies. (Schemathesis's own pytest
    decorator needs a pytest internal that pytest 9 removed, so the operations are
    driven here with Hypothesis directly.)"""
    headers = {"X-API-Key": server.admin_key}
    failures: list[str] = []
    tested = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=30)

        try:
            call()
        except (AssertionError, FailureGroup) as exc:  # every operation's failures reported
            failures.append(f"{operation.label}: {exc}"[:3000])
        tested += 1
    assert tested > 50
    assert not failures, "\n\n".join(failures)


def test_a_405_lists_every_method_of_the_path(server: LiveServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    several = {
        path: {method.upper() for method in operations}
        for path, operations in document["paths"].items()
        if len(operations) > 1
    }
    assert "/v1/admin/api-keys" in several  # GET (list) and POST (create)
    headers = {"X-API-Key": server.admin_key}
    for template, methods in several.items():
        path = template.replace("{", "x").replace("}", "")  # any value fills a parameter
        response = httpx.request("TRACE", f"{server.url}{path}", headers=headers)
        assert response.status_code == 405, (template, response.text)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == methods | ({"HEAD"} if "GET" in methods else set()), template
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_v2_errors_are_documented_in_the_protocol_shape(server: LiveServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    for status in ("400", "401", "403", "404", "413", "422", "429", "503"):
        schema = infer["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OipError"}, status
    body = infer["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "application/octet-stream"}
    # The documented shape is the one the server answers with.
    response = httpx.post(
        f"{server.url}/v2/models/nope/infer",
        headers={"X-API-Key": server.admin_key},
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]},
    )
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
    assert "Retry-After" in infer["responses"]["429"]["headers"]


#: GET routes whose body is the same from one call to the next.
SAME_BODY = {"/health/live", "/v1/models/{model}", "/v2/models/{model}", "/model/info"}


def test_head_answers_as_get_without_a_body(server: LiveServer) -> None:
    """RFC 9110: every GET route answers HEAD with GET's status and headers, no body."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    headers = {"X-API-Key": server.admin_key}
    gets = [path for path, operations in document["paths"].items() if "get" in operations]
    assert "/health/live" in gets and "/v1/models/{model}" in gets
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for template in gets:
            path = template.replace("{model}", "ids").replace("{", "x").replace("}", "")
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code, template
            assert head.content == b"", template
            assert head.headers.get("content-type") == got.headers.get("content-type"), template
            if template in SAME_BODY:  # others hold times and counters that move
                assert head.headers["content-length"] == got.headers["content-length"]
            assert head.headers["x-request-id"] != got.headers["x-request-id"]
    # A path without GET: 405, and the message names HEAD.
    refused = httpx.head(f"{server.url}/v1/models/ids/predict", headers=headers)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
