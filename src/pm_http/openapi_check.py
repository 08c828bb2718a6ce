"""A small JSON-schema checker for the OpenAPI document (no third-party validator).

It understands exactly ``type`` (a name or a list, ``"null"`` included), ``properties``,
``required``, ``additionalProperties``, ``enum``, ``const``, ``items``, ``oneOf``, ``$ref``
(local ``#/...`` pointers), ``minimum`` and ``maxLength``; ``description``, ``title``,
``format`` and ``examples`` are annotations. Any other keyword raises, so the document can
never rely on a rule that is silently not checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

CHECKED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "items",
        "oneOf",
        "$ref",
        "minimum",
        "maxLength",
    }
)
ANNOTATIONS = frozenset({"description", "title", "format", "examples", "example"})
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or a $ref) this checker does not understand."""


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list | tuple)
    if name == "object":
        return isinstance(value, Mapping)
    raise UnsupportedSchema(f"unknown type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    """The schema a local ``$ref`` (``#/components/schemas/X``) points at."""
    if not ref.startswith("#/"):
        raise UnsupportedSchema(f"only local $ref is supported: {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            raise UnsupportedSchema(f"$ref does not resolve: {ref!r}")
        node = node[key]
    if not isinstance(node, Mapping):
        raise UnsupportedSchema(f"$ref is not a schema: {ref!r}")
    return node


def errors(
    instance: Any, schema: Mapping[str, Any] | bool, root: Mapping[str, Any], at: str = "$"
) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (empty when it conforms)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{at}: no value is allowed here"]
    unknown = set(schema) - CHECKED - ANNOTATIONS
    if unknown:
        raise UnsupportedSchema(f"{at}: unsupported keyword(s) {sorted(unknown)}")
    out: list[str] = []
    if "$ref" in schema:
        out.extend(errors(instance, resolve(root, schema["$ref"]), root, at))
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(instance, n) for n in names):
            return [*out, f"{at}: expected {' or '.join(names)}, got {_kind(instance)}"]
    if "const" in schema and not _equal(instance, schema["const"]):
        out.append(f"{at}: must be {schema['const']!r}, got {instance!r}")
    if "enum" in schema and not any(_equal(instance, e) for e in schema["enum"]):
        out.append(f"{at}: must be one of {schema['enum']!r}, got {instance!r}")
    if "minimum" in schema and _type_ok(instance, "number") and instance < schema["minimum"]:
        out.append(f"{at}: must be >= {schema['minimum']}, got {instance!r}")
    if "maxLength" in schema and isinstance(instance, str) and len(instance) > schema["maxLength"]:
        out.append(f"{at}: longer than {schema['maxLength']} characters")
    if isinstance(instance, Mapping):
        out.extend(_object_errors(instance, schema, root, at))
    if "items" in schema and isinstance(instance, list | tuple):
        for i, item in enumerate(instance):
            out.extend(errors(item, schema["items"], root, f"{at}[{i}]"))
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not errors(instance, s, root, at)]
        if len(matching) != 1:
            detail = "none" if not matching else f"{len(matching)}"
            out.append(f"{at}: must match exactly one of oneOf, matched {detail}")
    return out


def _object_errors(
    instance: Mapping[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any], at: str
) -> list[str]:
    out: list[str] = []
    props: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in instance:
            out.append(f"{at}: missing required property {name!r}")
    for name, value in instance.items():
        where = f"{at}.{name}"
        if name in props:
            out.extend(errors(value, props[name], root, where))
        elif "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if extra is False:
                out.append(f"{where}: unexpected property")
            elif isinstance(extra, Mapping):
                out.extend(errors(value, extra, root, where))
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- the document


def routes(doc: Mapping[str, Any]) -> dict[str, set[str]]:
    """Path -> upper-case methods the document describes."""
    return {
        path: {m.upper() for m in item if m in HTTP_METHODS} for path, item in doc["paths"].items()
    }


def operation(doc: Mapping[str, Any], path: str, method: str) -> Mapping[str, Any]:
    """The operation object for ``method path`` (KeyError when undocumented)."""
    return doc["paths"][path][method.lower()]  # type: ignore[no-any-return]


def response_schema(
    doc: Mapping[str, Any],
    path: str,
    method: str,
    status: int,
    media_type: str = "application/json",
) -> Mapping[str, Any]:
    """The schema documented for one response (KeyError when undocumented)."""
    response = operation(doc, path, method)["responses"][str(status)]
    return response["content"][media_type]["schema"]  # type: ignore[no-any-return]


def check_response(
    doc: Mapping[str, Any], path: str, method: str, status: int, body: Any
) -> list[str]:
    """Why a JSON response breaks the document (undocumented status included)."""
    try:
        schema = response_schema(doc, path, method, status)
    except KeyError:
        return [f"{method.upper()} {path} {status}: not documented"]
    return errors(body, schema, doc)


def examples(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], Any]]:
    """Every (where, schema, example value) of request and response bodies."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                for name, ex in content.get("examples", {}).items():
                    yield (
                        (f"{method.upper()} {path} request {media} {name}"),
                        content["schema"],
                        ex["value"],
                    )
            for status, response in op.get("responses", {}).items():
                for media, content in response.get("content", {}).items():
                    for name, ex in content.get("examples", {}).items():
                        where = f"{method.upper()} {path} {status} {media} {name}"
                        yield where, content["schema"], ex["value"]


def _schema_keywords(schema: Any, at: str) -> Iterator[str]:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        yield f"{at}: a schema must be an object or a boolean"
        return
    for key in sorted(set(schema) - CHECKED - ANNOTATIONS):
        yield f"{at}: unsupported keyword {key!r}"
    for name, sub in schema.get("properties", {}).items():
        yield from _schema_keywords(sub, f"{at}.properties.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            yield from _schema_keywords(schema[key], f"{at}.{key}")
    for i, sub in enumerate(schema.get("oneOf", ())):
        yield from _schema_keywords(sub, f"{at}.oneOf[{i}]")


def _path_schemas(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("examples", "example"):
                continue
            if key == "schema":
                yield f"{at}.schema", value
            else:
                yield from _path_schemas(value, f"{at}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _path_schemas(value, f"{at}[{i}]")


def unsupported(doc: Mapping[str, Any]) -> list[str]:
    """Every schema keyword in the document this checker would not enforce."""
    out: list[str] = []
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        out.extend(_schema_keywords(schema, f"#/components/schemas/{name}"))
    for where, schema in _path_schemas(doc["paths"], "paths"):
        out.extend(_schema_keywords(schema, where))
    return out
