"""What the sync and async clients share: routes, types, errors, the SSE parser."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, TypedDict, Union
from urllib.parse import quote

import httpx

# The routes of the API the clients call, by the operation id of the server's OpenAPI
# document (GET /v1/openapi.json); tests/test_openapi.py compares them with the document.
ROUTES: Dict[str, Tuple[str, str]] = {
    "spawn": ("POST", "/v1/backends"),
    "list": ("GET", "/v1/backends"),
    "list_stream": ("GET", "/v1/backends/stream"),
    "get": ("GET", "/v1/backends/{id}"),
    "terminate": ("POST", "/v1/backends/{id}/terminate"),
    "wake": ("POST", "/v1/backends/{id}/wake"),
    "keepalive": ("POST", "/v1/backends/{id}/keepalive"),
    "connect": ("POST", "/v1/backends/{id}/connect"),
    "access": ("GET", "/v1/backends/{id}/access"),
    "revoke": ("DELETE", "/v1/backends/{id}/access/{user}"),
    "logs": ("GET", "/v1/backends/{id}/logs"),
    "status": ("GET", "/v1/backends/{id}/status"),
    "status_stream": ("GET", "/v1/backends/{id}/status/stream"),
    "ready": ("GET", "/v1/backends/{id}/ready"),
    "create_pool": ("POST", "/v1/pools"),
    "list_pools": ("GET", "/v1/pools"),
    "get_pool": ("GET", "/v1/pools/{name}"),
    "resize_pool": ("PUT", "/v1/pools/{name}"),
    "drain_pool": ("DELETE", "/v1/pools/{name}"),
    "login": ("POST", "/v1/login"),
    "login_links": ("POST", "/v1/login-links"),
    "healthz": ("GET", "/healthz"),
    "metrics": ("GET", "/metrics"),
    "openapi": ("GET", "/v1/openapi.json"),
}

# The method of Spawner and AsyncSpawner that calls each operation of ROUTES.
METHODS: Dict[str, str] = {
    "spawn": "spawn",  # and claim(): the same route with `pool`
    "list": "list",  # and list_page()
    "list_stream": "watch_list",
    "get": "get",
    "terminate": "terminate",
    "wake": "wake",
    "keepalive": "keepalive",
    "connect": "connect",
    "access": "access",
    "revoke": "revoke",
    "logs": "logs",
    "status": "last_event",
    "status_stream": "status",  # and wait_ready()
    "ready": "is_ready",
    "create_pool": "create_pool",
    "list_pools": "list_pools",  # and list_pools_page()
    "get_pool": "get_pool",
    "resize_pool": "resize_pool",
    "drain_pool": "delete_pool",
    "login": "login",
    "login_links": "login_link",
    "healthz": "health",
    "metrics": "metrics",
    "openapi": "openapi",
}

TERMINAL = frozenset({"Swept", "Failed", "Terminated"})

State = Literal[
    "Submitted", "Constructed", "Scheduled", "Running", "Ready", "Sleeping", "Waking",
    "Terminating", "Swept", "Failed", "Terminated",
]

# Bodies and records are the API's JSON (docs/api.md), unchanged: these types describe them.


class Event(TypedDict, total=False):
    state: State
    time: str
    reason: str
    exit_code: int


class StatusEvent(Event, total=False):
    """One event of the status stream: `type` "event", `id` its sequence number."""

    type: Literal["event"]
    id: int


class Expiring(TypedDict):
    """A stop announced ahead (`lifetime_warning_seconds`): `type` "expiring"."""

    type: Literal["expiring"]
    at: str
    reason: str


StatusItem = Union[StatusEvent, Expiring]


class SpawnResponse(TypedDict, total=False):
    id: str
    key: str
    state: State
    url: str
    ready_url: str
    status_url: str
    status_stream_url: str
    created: bool  # False when the live backend with the same key was returned


class BackendRecord(TypedDict, total=False):
    id: str
    key: str
    state: State
    reason: str
    url: str
    spec: Dict[str, Any]
    created_at: str
    events: List[Event]
    exit_code: Optional[int]
    live_connections: int
    last_activity: Optional[str]
    last_client_activity: Optional[str]
    busy_until: str
    node: str
    address: str
    runtime: str
    pool: str  # the warm pool that started it, if one did
    claimed_at: str  # when a claim took it from its pool


class ListPage(TypedDict, total=False):
    backends: List[BackendRecord]
    next: str


class ListChange(TypedDict, total=False):
    """`type` "snapshot" (with `backends`, `next`) first, then "backend" (with `backend`)."""

    type: Literal["snapshot", "backend"]
    backends: List[BackendRecord]
    next: str
    backend: BackendRecord


class PoolStatus(TypedDict, total=False):
    name: str
    template: Dict[str, Any]
    min_ready: int
    max: int
    ready: int
    starting: int
    claimed: int
    claims: int
    cold_claims: int


class PoolPage(TypedDict, total=False):
    pools: List[PoolStatus]
    next: str


class SpawnerError(Exception):
    """Every failure of a call. `code` is the API's error code (`not_found`,
    `pool_exhausted`..., docs/api.md "Errors") and `status` its HTTP status; failures that
    are not the API's have status 0 and the codes `unreachable` (no answer), `not_spawner`
    (an answer that is not Spawner's), `timeout` (wait_ready) or `stream_broken` (a stream
    that could not be resumed)."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"SpawnerError({self.code!r}, {self.status}, {self.message!r})"


Query = List[Tuple[str, Any]]


def path_of(op: str, **params: str) -> Tuple[str, str]:
    method, template = ROUTES[op]
    return method, re.sub(r"\{(\w+)\}", lambda m: quote(str(params[m.group(1)]), safe=""), template)


def list_query(
    state: Optional[str] = None,
    key: Optional[str] = None,
    label: Union[str, Sequence[str], None] = None,
    labels: Optional[Mapping[str, str]] = None,
) -> Query:
    q: Query = []
    if state:
        q.append(("state", state))
    if key:
        q.append(("key", key))
    if isinstance(label, str):
        q.append(("label", label))
    elif label:
        q.extend(("label", item) for item in label)
    for k, v in (labels or {}).items():
        q.append(("label", f"{k}={v}"))
    return q


def page_query(limit: Optional[int], after: Optional[str]) -> Query:
    q: Query = []
    if limit is not None:
        q.append(("limit", str(limit)))
    if after:
        q.append(("after", after))
    return q


def api_error(resp: httpx.Response, text: str) -> SpawnerError:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return SpawnerError(body["error"], resp.status_code, str(body.get("message") or body["error"]))
    start = " ".join(text.split())[:60]
    return SpawnerError(
        "not_spawner",
        resp.status_code,
        f"{resp.request.url} answered {resp.status_code} {start!r}: that is not Spawner's API; is the url that of spawner serve?",
    )


def unreachable(base: str, e: Exception) -> SpawnerError:
    return SpawnerError("unreachable", 0, f"cannot reach Spawner at {base}: {e}")


def broken(e: Exception) -> SpawnerError:
    if isinstance(e, SpawnerError) and e.code == "stream_broken":
        return e
    return SpawnerError("stream_broken", 0, f"the stream broke and could not be resumed: {e}")


def backoff(n: int) -> float:
    return float(min(0.1 * 2 ** (n - 1), 2.0))


class SSEParser:
    """Server-Sent Events (the WHATWG format), fed lines: yields (event, id, data)."""

    def __init__(self) -> None:
        self.event = "message"
        self.id: Optional[str] = None
        self.data: List[str] = []

    def feed(self, line: str) -> Optional[Tuple[str, Optional[str], str]]:
        if line == "":
            out = (self.event, self.id, "\n".join(self.data)) if self.data else None
            self.event, self.id, self.data = "message", None, []
            return out
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self.data.append(value)
        elif field == "event":
            self.event = value
        elif field == "id":
            self.id = value
        return None


class StatusCursor:
    """What a status stream has yielded so far: resumes after `last`, never repeats one."""

    def __init__(self, last: Optional[int]) -> None:
        self.last = last
        self.done = False

    def headers(self) -> Dict[str, str]:
        return {} if self.last is None else {"Last-Event-ID": str(self.last)}

    def item(self, event: str, id: Optional[str], data: str) -> Optional[StatusItem]:
        if event == "expiring":
            body = json.loads(data)
            return Expiring(type="expiring", at=body["at"], reason=body["reason"])
        if event != "message" or id is None:
            return None
        seq = int(id)
        if self.last is not None and seq <= self.last:
            return None
        self.last = seq
        ev: StatusEvent = json.loads(data)
        ev["type"] = "event"
        ev["id"] = seq
        self.done = ev.get("state") in TERMINAL
        return ev


def list_change(event: str, data: str) -> Optional[ListChange]:
    if event == "snapshot":
        snap: ListChange = json.loads(data)
        snap["type"] = "snapshot"
        return snap
    if event == "backend":
        return ListChange(type="backend", backend=json.loads(data))
    return None


def gone(id: str, ev: Event) -> SpawnerError:
    why = f": {ev['reason']}" if ev.get("reason") else ""
    return SpawnerError("gone", 410, f"backend {id} ended {ev.get('state')}{why} before it was Ready")




def connect_body(
    user: str,
    user_data: Any = None,
    ttl_seconds: Optional[int] = None,
    reusable: Optional[bool] = None,
) -> Dict[str, Any]:
    """The body of a connect: the user, and what else was given."""
    body: Dict[str, Any] = {"user": user}
    if user_data is not None:
        body["user_data"] = user_data
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if reusable is not None:
        body["reusable"] = reusable
    return body
