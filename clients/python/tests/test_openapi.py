"""Every operation of the server's OpenAPI document is a method of both clients."""

from __future__ import annotations

from typing import Dict, List, Tuple

from conftest import TOKEN, URL
from spawner_client import METHODS, ROUTES, AsyncSpawner, Spawner

# Operations of the document that are not API calls of a client, and why.
NOT_CALLS = {
    "proxy": "the backend's own traffic: the browser goes to the backend's `url`",
    "dashboard": "an HTML page: login_link() gives its login link",
    "seed_spawn": "the seed's routes, kept for the seed's clients: spawn() is their /v1 twin (request() reaches them too)",
    "seed_status": "the seed's: last_event()",
    "seed_status_stream": "the seed's: status()",
    "seed_ready": "the seed's: is_ready()",
}


def test_every_operation_of_the_document_is_reachable() -> None:
    doc = Spawner(URL, TOKEN).openapi()
    ops: Dict[str, Tuple[str, str]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                ops[op["operationId"]] = (method.upper(), path)
    problems: List[str] = []
    for op_id, (method, path) in ops.items():
        if op_id in NOT_CALLS:
            continue
        mine = ROUTES.get(op_id)
        if mine is None:
            problems.append(f"missing: {op_id} ({method} {path})")
        elif mine != (method, path):
            problems.append(f"{op_id}: the client calls {mine}, the document says {(method, path)}")
    for op_id in ROUTES:
        if op_id not in ops:
            problems.append(f"the clients call {op_id}, which the document does not have")
        for cls in (Spawner, AsyncSpawner):
            if not callable(getattr(cls, METHODS[op_id], None)):
                problems.append(f"{op_id}: no method {cls.__name__}.{METHODS[op_id]}")
    assert problems == [], "\n".join(problems)
