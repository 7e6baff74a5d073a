"""The test harness's Schema Registry (the `schema_registry_url` fixture) behaves like Confluent's
where the client relies on it: a registered schema comes back by its id, and an incompatible
new version is refused (global compatibility BACKWARD). Plain urllib, not the product's client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _call(url: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _record(*fields: dict[str, object]) -> str:
    id_field = {"name": "id", "type": "long"}
    return json.dumps({"type": "record", "name": "Reading", "fields": [id_field, *fields]})


def test_registers_returns_by_id_and_refuses_incompatible(schema_registry_url: str) -> None:
    subject = f"harness-{uuid.uuid4().hex[:10]}-value"
    versions = f"{schema_registry_url}/subjects/{subject}/versions"

    v1 = _record()
    status, registered = _call(versions, {"schema": v1})
    assert status == 200, registered
    schema_id = registered["id"]
    assert isinstance(schema_id, int)

    status, by_id = _call(f"{schema_registry_url}/schemas/ids/{schema_id}")
    assert status == 200, by_id
    assert json.loads(str(by_id["schema"])) == json.loads(v1)

    # A new field without a default: old records cannot be read with it (not BACKWARD).
    status, refused = _call(versions, {"schema": _record({"name": "x", "type": "string"})})
    assert status == 409, refused
    assert refused["error_code"] == 409

    # With a default it is compatible, and becomes version 2.
    status, accepted = _call(versions, {"schema": _record({"name": "x", "type": "string", "default": ""})})
    assert status == 200, accepted
    status, latest = _call(f"{versions}/latest")
    assert status == 200, latest
    assert (latest["version"], latest["id"]) == (2, accepted["id"])
