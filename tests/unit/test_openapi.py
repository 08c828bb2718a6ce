"""The OpenAPI document, its examples, the route table, and the in-repo schema checker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pm_http.app import ROUTES, load_openapi
from pm_http.openapi_check import (
    CHECKED,
    UnsupportedSchema,
    check_response,
    errors,
    examples,
    routes,
    unsupported,
)
from tests.kit.openapi import DOC, assert_response_matches

SPEC = Path("/work/shared/spec/webhook.md")


def test_document_is_openapi_3_1_and_served_bytes_are_the_committed_file() -> None:
    assert DOC["openapi"].startswith("3.1")
    committed = Path(__file__).parents[2] / "src" / "pm_http" / "openapi.json"
    assert load_openapi() == committed.read_bytes()


def test_route_table_and_document_agree() -> None:
    assert routes(DOC) == {path: set(methods) for path, methods in ROUTES.items()}


def test_every_documented_status_of_webhook_md() -> None:
    statuses = set(DOC["paths"]["/webhook"]["post"]["responses"])
    assert statuses == {"200", "202", "400", "401", "413", "422", "429", "500", "503"}
    for view in ("/positions", "/status"):
        assert {"200", "401", "404"} <= set(DOC["paths"][view]["get"]["responses"])
    assert set(DOC["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}


def test_every_example_validates_against_its_schema() -> None:
    seen = 0
    for where, schema, value in examples(DOC):
        assert errors(value, schema, DOC) == [], where
        seen += 1
    assert seen >= 30


def test_every_schema_uses_only_checked_keywords() -> None:
    assert unsupported(DOC) == []
    bad = {
        "paths": {
            "/x": {
                "get": {
                    "responses": {
                        "200": {
                            "content": {
                                "a": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"n": {"type": "string", "pattern": "x"}},
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert unsupported(bad) == [
        "paths./x.get.responses.200.content.a.schema.properties.n: unsupported keyword 'pattern'"
    ]


def _spec_json_blocks() -> list[Any]:
    if not SPEC.exists():
        pytest.skip("shared spec not present")
    out: list[Any] = []
    for block in re.findall(r"```json\n(.*?)```", SPEC.read_text(), re.S):
        try:
            out.append(json.loads(block))
        except ValueError:
            out.extend(json.loads(line) for line in block.strip().splitlines())
    return out


def test_document_carries_every_example_of_webhook_md_1_3() -> None:
    values = [v for _, _, v in examples(DOC)]
    blocks = _spec_json_blocks()
    responses = [b for b in blocks if "request_id" in b]
    alerts = [b for b in blocks if "request_id" not in b]
    assert len(responses) >= 15
    for body in responses:
        assert body in values, body.get("status")
    for alert in alerts:
        wanted = {k: v for k, v in alert.items() if k != "secret"}
        assert any(
            isinstance(val, dict) and wanted == {k: v for k, v in val.items() if k in wanted}
            for val in values
        ), alert


def test_spec_examples_validate_against_the_documented_status() -> None:
    by_status = {
        "executed": 200,
        "partially_executed": 200,
        "blocked": 200,
        "rejected": 200,
        "duplicate": 200,
        "in_progress": 202,
        "unauthorized": 401,
        "too_large": 413,
        "rate_limited": 429,
        "unavailable": 503,
    }
    for body in _spec_json_blocks():
        status = body.get("status")
        if status in by_status:
            assert_response_matches("/webhook", "POST", by_status[status], body)


# --------------------------------------------------------------------------- the checker

ROOT: dict[str, Any] = {
    "components": {
        "schemas": {
            "Pos": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "maxLength": 5},
                    "lots": {"type": "integer", "minimum": 0},
                },
                "required": ["key"],
                "additionalProperties": False,
            }
        }
    }
}
REF = {"$ref": "#/components/schemas/Pos"}


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "string"}, "x", 1),
        ({"type": "integer"}, 3, 3.5),
        ({"type": "integer"}, 3.0, True),
        ({"type": "number"}, 2.5, "2.5"),
        ({"type": "number"}, 2, False),
        ({"type": "boolean"}, False, 0),
        ({"type": "null"}, None, 0),
        ({"type": "array"}, [], {}),
        ({"type": "object"}, {}, []),
        ({"type": ["string", "null"]}, None, 1),
        ({"enum": ["a", 1]}, 1, True),
        ({"enum": ["a", 1]}, "a", "b"),
        ({"const": "x"}, "x", "y"),
        ({"const": 1}, 1.0, True),
        ({"minimum": 0}, 0, -0.5),
        ({"minimum": 0}, "not a number is fine", -1),
        ({"maxLength": 3}, "abc", "abcd"),
        ({"items": {"type": "integer"}}, [1, 2], [1, "2"]),
        (REF, {"key": "a", "lots": 1}, {"key": "a", "lots": -1}),
        (REF, {"key": "abcde"}, {"key": "abcdef"}),
        (REF, {"key": "a"}, {"lots": 1}),
        (REF, {"key": "a"}, {"key": "a", "extra": 1}),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": 1}, {"a": "1"}),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, 1, 1.5),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 1.5, 1),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "object", "properties": {"b": {"const": 1}}}},
            },
            {"a": {"b": 1}},
            {"a": {"b": 2}},
        ),
    ],
)
def test_checker_accepts_good_and_rejects_bad(schema: dict[str, Any], good: Any, bad: Any) -> None:
    assert errors(good, schema, ROOT) == []
    assert errors(bad, schema, ROOT) != []


def test_checker_reports_every_problem_with_its_location() -> None:
    problems = errors({"lots": "x", "extra": 1}, REF, ROOT)
    assert any("missing required property 'key'" in p for p in problems)
    assert any(p.startswith("$.lots") for p in problems)
    assert any(p.startswith("$.extra") for p in problems)


def test_checker_refuses_what_it_cannot_check() -> None:
    with pytest.raises(UnsupportedSchema):
        errors("x", {"pattern": "^x$"}, ROOT)
    with pytest.raises(UnsupportedSchema):
        errors("x", {"$ref": "http://example.com/s.json"}, ROOT)
    with pytest.raises(UnsupportedSchema):
        errors("x", {"$ref": "#/components/schemas/Missing"}, ROOT)
    with pytest.raises(UnsupportedSchema):
        errors("x", {"type": "decimal"}, ROOT)
    assert "pattern" not in CHECKED


def test_real_shapes_are_rejected_when_broken() -> None:
    blocked = next(v for w, _, v in examples(DOC) if w.endswith("blocked_pyramid"))
    assert check_response(DOC, "/webhook", "POST", 200, blocked) == []
    broken = json.loads(json.dumps(blocked))
    broken["decision"]["sizing"]["lot_r"] = 1.0  # a mix of base and pyramid sizing
    assert check_response(DOC, "/webhook", "POST", 200, broken) != []
    wrong_status = dict(blocked, status="in_progress")
    assert check_response(DOC, "/webhook", "POST", 200, wrong_status) != []
    assert check_response(DOC, "/webhook", "POST", 418, blocked) != []
    too_large = {"status": "too_large", "request_id": "x", "limit_bytes": 10240, "secret": "s"}
    assert check_response(DOC, "/webhook", "POST", 413, too_large) != []


def test_kit_helper_checks_unknown_paths_and_methods() -> None:
    assert_response_matches("/nope", "GET", 404, {"status": "not_found", "request_id": "a"})
    assert_response_matches(
        "/health", "POST", 405, {"status": "method_not_allowed", "request_id": "a"}
    )
    with pytest.raises(AssertionError):
        assert_response_matches("/nope", "GET", 200, {"status": "not_found", "request_id": "a"})
    with pytest.raises(AssertionError):
        assert_response_matches("/webhook", "POST", 401, {"status": "unauthorized"})
