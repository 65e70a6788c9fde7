"""The asyncio client: the same calls as the blocking one, awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Union, overload

import httpx

from ._common import (
    BackendRecord,
    connect_body,
    Event,
    ListChange,
    ListPage,
    PoolPage,
    PoolStatus,
    Query,
    SpawnerError,
    SpawnResponse,
    StatusCursor,
    StatusEvent,
    StatusItem,
    SSEParser,
    TERMINAL,
    api_error,
    backoff,
    broken,
    gone,
    list_change,
    list_query,
    page_query,
    path_of,
    unreachable,
)

# A stream is read with this timeout between bytes: the server sends a comment every 15 s,
# so a connection silent for longer is dead, and is resumed.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=45.0)


class AsyncSpawner:
    """An asyncio connection to one Spawner server (`spawner serve`, or `spawner api` on Kubernetes).

    `url`: its base URL. `token`: the control token (`spawner token`); the status routes need
    none. `retries`: how many reconnections in a row a stream may make before it gives up.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.retries = retries
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._headers = headers

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncSpawner":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- backends -------------------------------------------------------------------------

    async def spawn(self, spec: Mapping[str, Any]) -> SpawnResponse:
        """Spawns a backend, or returns the live one with `spec["key"]` (`created` False)."""
        resp = await self._call("spawn", json=spec)
        out: SpawnResponse = resp.json()
        out["created"] = resp.status_code == 201
        return out

    async def claim(self, pool: str, **options: Any) -> SpawnResponse:
        """Claims a Ready backend of a warm pool; `options` are the claim's fields (`key`,
        `labels`, `grace_period_seconds`, `lifetime_limit_seconds`, `if_none_ready`,
        `wait_seconds`)."""
        return await self.spawn({**options, "pool": pool})

    async def get(self, id: str) -> BackendRecord:
        """The whole record of a backend, with its events."""
        out: BackendRecord = (await self._call("get", id=id)).json()
        return out

    async def list(
        self,
        *,
        state: Optional[str] = None,
        key: Optional[str] = None,
        label: Union[str, Sequence[str], None] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> List[BackendRecord]:
        """Every backend matching the filters, all pages read."""
        out: List[BackendRecord] = []
        after: Optional[str] = None
        while True:
            page = await self.list_page(state=state, key=key, label=label, labels=labels, after=after)
            out.extend(page["backends"])
            nxt = page.get("next")
            if not nxt or nxt == after:
                return out
            after = nxt

    async def list_page(
        self,
        *,
        state: Optional[str] = None,
        key: Optional[str] = None,
        label: Union[str, Sequence[str], None] = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
    ) -> ListPage:
        """One page: `{"backends", "next"}`; pass `next` as `after` for the next one."""
        q = list_query(state, key, label, labels) + page_query(limit, after)
        out: ListPage = (await self._call("list", params=q)).json()
        return out

    async def watch_list(
        self,
        *,
        state: Optional[str] = None,
        key: Optional[str] = None,
        label: Union[str, Sequence[str], None] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> AsyncIterator[ListChange]:
        """The list kept current: a `snapshot` first, then a `backend` on every change; after
        a dropped connection, a fresh snapshot. Runs until the caller stops iterating."""
        q = list_query(state, key, label, labels)
        failures = 0
        while True:
            try:
                async for event, _, data in self._sse("list_stream", {}, q, {}):
                    failures = 0
                    change = list_change(event, data)
                    if change is not None:
                        yield change
            except SpawnerError as e:
                if e.status != 0:
                    raise
                err: Exception = e
            except httpx.HTTPError as e:
                err = e
            else:
                err = SpawnerError("stream_broken", 0, "the list stream ended")
            failures += 1
            if failures > self.retries:
                raise broken(err)
            await asyncio.sleep(backoff(failures))

    def status(self, id: str, *, last_event_id: Optional[int] = None) -> AsyncIterator[StatusItem]:
        """The status stream: every event (`type` "event", `id` its number), past ones first
        (after `last_event_id` when given), and `type` "expiring" announcements. A dropped
        connection is resumed with Last-Event-ID: no event lost or repeated. Ends after a
        terminal state."""
        return self._status(id, last_event_id, None)

    async def _status(self, id: str, last_event_id: Optional[int], deadline: Optional[float]) -> AsyncIterator[StatusItem]:
        cursor = StatusCursor(last_event_id)
        failures = 0
        while True:
            try:
                async for event, eid, data in self._sse("status_stream", {"id": id}, [], cursor.headers(), deadline):
                    item = cursor.item(event, eid, data)
                    if item is None:
                        continue
                    if item["type"] == "event":
                        failures = 0
                    yield item
                    if cursor.done:
                        return
            except SpawnerError as e:
                if e.status != 0:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    return
                err: Exception = e
            except httpx.HTTPError as e:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                err = e
            else:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                # The server ends the stream only after a terminal state.
                err = SpawnerError("stream_broken", 0, "the status stream ended early")
            failures += 1
            if failures > self.retries:
                raise broken(err)
            await asyncio.sleep(backoff(failures))

    async def wait_ready(self, id: str, *, timeout: Optional[float] = None) -> StatusEvent:
        """Waits until the backend is Ready; returns its Ready event. `gone` (410) when it
        ends first, `timeout` after `timeout` seconds."""

        async def follow() -> StatusEvent:
            async for item in self._status(id, None, None):
                if item["type"] != "event":
                    continue
                if item.get("state") == "Ready":
                    return item
                if item.get("state") in TERMINAL:
                    raise gone(id, item)
            raise SpawnerError("stream_broken", 0, "the status stream ended")

        try:
            return await asyncio.wait_for(follow(), timeout)
        except asyncio.TimeoutError:
            raise SpawnerError("timeout", 0, f"backend {id} was not Ready within {timeout} s") from None

    async def last_event(self, id: str) -> Event:
        """The backend's last event (`GET .../status`)."""
        out: Event = (await self._call("status", id=id)).json()
        return out

    async def is_ready(self, id: str) -> bool:
        """Whether the backend is Ready: False while it starts, `gone` once it has ended."""
        return (await self._call("ready", id=id, ok=(302, 409))).status_code == 302

    async def keepalive(self, id: str, seconds: int) -> Dict[str, str]:
        """Keeps the backend from being swept for `seconds` from now: `{"id", "busy_until"}`."""
        out: Dict[str, str] = (await self._call("keepalive", id=id, json={"seconds": seconds})).json()
        return out

    async def connect(
        self,
        id: str,
        user: str,
        *,
        user_data: Any = None,
        ttl_seconds: Optional[int] = None,
        reusable: Optional[bool] = None,
    ) -> Dict[str, str]:
        """A connect URL of a token-mode backend for `user` (another user shares it):
        `{"connect_url", "expires_at"}`. Send the browser there; the URL is a secret, good
        once and for `ttl_seconds` (60 by default) unless `reusable`."""
        body = connect_body(user, user_data, ttl_seconds, reusable)
        out: Dict[str, str] = (await self._call("connect", id=id, json=body)).json()
        return out

    async def access(self, id: str) -> Dict[str, Any]:
        """Who holds access to the backend: `{"mode", "users": [{"user", "user_data"?,
        "granted_at"}]}`."""
        out: Dict[str, Any] = (await self._call("access", id=id)).json()
        return out

    async def revoke(self, id: str, user: str) -> None:
        """Ends `user`'s access: their next request is refused, their WebSockets closed
        (1008)."""
        await self._call("revoke", id=id, user=user)

    async def terminate(self, id: str, *, hard: bool = False) -> Dict[str, Any]:
        """Stops the backend (`hard`: SIGKILL at once): `{"id", "state", "hard"}`."""
        out: Dict[str, Any] = (await self._call("terminate", id=id, json={"hard": hard})).json()
        return out

    async def wake(self, id: str) -> Dict[str, Any]:
        """Wakes a Sleeping backend (spawned with `idle_action: "sleep"`) ahead of its user:
        `{"id", "state"}`, `state` being `Waking`, or the state of one that was not asleep."""
        out: Dict[str, Any] = (await self._call("wake", id=id)).json()
        return out

    @overload
    def logs(self, id: str, *, follow: Literal[False] = False) -> Awaitable[str]: ...
    @overload
    def logs(self, id: str, *, follow: Literal[True]) -> AsyncIterator[str]: ...
    def logs(self, id: str, *, follow: bool = False) -> Union[Awaitable[str], AsyncIterator[str]]:
        """The backend's stdout and stderr (`await logs(id)`); with `follow=True`, an async
        iterator of text (`async for`) that ends when the backend has ended."""
        if not follow:
            return self._logs_text(id)
        return self._follow_logs(id)

    async def _logs_text(self, id: str) -> str:
        return (await self._call("logs", id=id)).text

    async def _follow_logs(self, id: str) -> AsyncIterator[str]:
        method, path = path_of("logs", id=id)
        async with self._stream(method, path, [("follow", "true")], {}) as resp:
            async for text in resp.aiter_text():
                yield text

    # ---- pools ----------------------------------------------------------------------------

    async def create_pool(self, spec: Mapping[str, Any]) -> PoolStatus:
        """Creates a warm pool `{"name", "template", "min_ready", "max"}`."""
        out: PoolStatus = (await self._call("create_pool", json=spec)).json()
        return out

    async def get_pool(self, name: str) -> PoolStatus:
        out: PoolStatus = (await self._call("get_pool", name=name)).json()
        return out

    async def list_pools(self) -> List[PoolStatus]:
        """Every pool, all pages read."""
        out: List[PoolStatus] = []
        after: Optional[str] = None
        while True:
            page = await self.list_pools_page(after=after)
            out.extend(page["pools"])
            nxt = page.get("next")
            if not nxt or nxt == after:
                return out
            after = nxt

    async def list_pools_page(self, *, limit: Optional[int] = None, after: Optional[str] = None) -> PoolPage:
        out: PoolPage = (await self._call("list_pools", params=page_query(limit, after))).json()
        return out

    async def resize_pool(self, name: str, *, min_ready: int, max: int) -> PoolStatus:
        out: PoolStatus = (await self._call("resize_pool", name=name, json={"min_ready": min_ready, "max": max})).json()
        return out

    async def delete_pool(self, name: str) -> Dict[str, Any]:
        """Removes the pool and stops its unclaimed backends: `{"name", "stopping"}`."""
        out: Dict[str, Any] = (await self._call("drain_pool", name=name)).json()
        return out

    # ---- operations -----------------------------------------------------------------------

    async def login(self, code: str) -> Dict[str, str]:
        """Trades a login link's code for the token: `{"token"}`."""
        out: Dict[str, str] = (await self._call("login", json={"code": code})).json()
        return out

    async def login_link(self) -> Dict[str, Any]:
        """A new one-time login link to the dashboard: `{"url", "expires_in_seconds"}`."""
        out: Dict[str, Any] = (await self._call("login_links", json={})).json()
        return out

    async def health(self) -> bool:
        await self._call("healthz")
        return True

    async def metrics(self) -> str:
        return (await self._call("metrics")).text

    async def openapi(self) -> Dict[str, Any]:
        out: Dict[str, Any] = (await self._call("openapi")).json()
        return out

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Query] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> httpx.Response:
        """Any route, with the token and errors of the others: for routes newer than this client."""
        return await self._send(method, path, json=json, params=params, headers=headers)

    # ---- plumbing -------------------------------------------------------------------------

    async def _call(
        self,
        op: str,
        *,
        json: Any = None,
        params: Optional[Query] = None,
        ok: Sequence[int] = (),
        **path_params: str,
    ) -> httpx.Response:
        method, path = path_of(op, **path_params)
        return await self._send(method, path, json=json, params=params, ok=ok)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Query] = None,
        headers: Optional[Mapping[str, str]] = None,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        try:
            resp = await self._http.request(
                method, self.url + path, json=json, params=params, headers={**self._headers, **(headers or {})}
            )
        except httpx.HTTPError as e:
            raise unreachable(self.url, e) from e
        if resp.is_success or resp.status_code in ok:
            return resp
        raise api_error(resp, resp.text)

    def _stream(
        self, method: str, path: str, params: Query, headers: Mapping[str, str], deadline: Optional[float] = None
    ) -> "_Stream":
        timeout = STREAM_TIMEOUT
        if deadline is not None:
            left = max(0.001, deadline - time.monotonic())
            timeout = httpx.Timeout(min(10.0, left), read=min(45.0, left))
        return _Stream(self, method, path, params, headers, timeout)

    async def _sse(
        self,
        op: str,
        path_params: Mapping[str, str],
        params: Query,
        headers: Mapping[str, str],
        deadline: Optional[float] = None,
    ) -> AsyncIterator[Any]:
        method, path = path_of(op, **path_params)
        parser = SSEParser()
        async with self._stream(method, path, params, headers, deadline) as resp:
            async for line in resp.aiter_lines():
                # The server's keep-alive comments would hold a read timeout off forever.
                if deadline is not None and time.monotonic() >= deadline:
                    return
                msg = parser.feed(line)
                if msg is not None:
                    yield msg


class _Stream:
    """A streamed answer, checked like the others, closed when left."""

    def __init__(
        self,
        client: AsyncSpawner,
        method: str,
        path: str,
        params: Query,
        headers: Mapping[str, str],
        timeout: httpx.Timeout = STREAM_TIMEOUT,
    ) -> None:
        self._cm = client._http.stream(
            method,
            client.url + path,
            params=params,
            headers={**client._headers, **headers},
            timeout=timeout,
        )
        self._client = client

    async def __aenter__(self) -> httpx.Response:
        try:
            resp = await self._cm.__aenter__()
        except httpx.HTTPError as e:
            raise unreachable(self._client.url, e) from e
        if not resp.is_success:
            text = (await resp.aread()).decode("utf-8", "replace")
            await self._cm.__aexit__(None, None, None)
            raise api_error(resp, text)
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)
