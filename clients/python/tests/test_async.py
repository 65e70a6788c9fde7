"""The asyncio client against a real `spawner serve`: the same calls, awaited."""

from __future__ import annotations

import re
from typing import List

import pytest

from conftest import TOKEN, URL, Relay, example_app, unique
from spawner_client import AsyncSpawner, SpawnerError, StatusItem

pytestmark = pytest.mark.anyio


async def test_spawn_wait_ready_list_terminate() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        key = unique("adoc")
        first = await s.spawn(example_app(key=key, labels={"owner": key}))
        assert first["created"] is True
        assert (await s.spawn(example_app(key=key)))["created"] is False
        assert (await s.wait_ready(first["id"], timeout=30))["state"] == "Ready"
        assert await s.is_ready(first["id"]) is True
        assert (await s.last_event(first["id"]))["state"] == "Ready"
        assert [b["id"] for b in await s.list(labels={"owner": key})] == [first["id"]]
        page = await s.list_page(key=key, limit=1)
        assert [b["id"] for b in page["backends"]] == [first["id"]]
        assert (await s.get(first["id"]))["state"] == "Ready"
        assert (await s.keepalive(first["id"], 60))["id"] == first["id"]
        assert (await s.terminate(first["id"]))["state"] == "Terminating"
        states = [i.get("state") async for i in s.status(first["id"]) if i["type"] == "event"]
        assert states[-1] == "Terminated"
        assert "example-app listening" in await s.logs(first["id"])


async def test_wait_ready_gone_and_timeout() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        failing = await s.spawn({"executable": {"command": ["sh", "-c", "exit 3"]}})
        with pytest.raises(SpawnerError) as e:
            await s.wait_ready(failing["id"], timeout=30)
        assert e.value.code == "gone"
        silent = await s.spawn({"executable": {"command": ["sleep", "60"]}})
        with pytest.raises(SpawnerError) as e:
            await s.wait_ready(silent["id"], timeout=0.3)
        assert (e.value.code, e.value.status) == ("timeout", 0)
        await s.terminate(silent["id"], hard=True)


async def test_a_resumed_status_stream_loses_no_event_and_repeats_none(relay: Relay) -> None:
    async with AsyncSpawner(URL, TOKEN) as s, AsyncSpawner(relay.url, TOKEN) as through:
        id = (await s.spawn(example_app()))["id"]
        await s.wait_ready(id, timeout=30)
        relay.break_after_event(2)  # mid-replay, then (below) live
        seen: List[StatusItem] = []
        async for item in through.status(id):
            seen.append(item)
            if item.get("state") == "Ready":
                relay.cut()
                await s.terminate(id)
        ids = [i["id"] for i in seen if i["type"] == "event"]
        assert ids == list(range(1, len(ids) + 1))
        record = await s.get(id)
        assert [(i.get("state"), i.get("time")) for i in seen] == [(e.get("state"), e.get("time")) for e in record["events"]]
        streams = [h for h in relay.requests if f"/v1/backends/{id}/status/stream" in h]
        resumed_from = [m.group(1) if (m := re.search(r"^last-event-id: (\d+)$", h, re.I | re.M)) else None for h in streams]
        assert resumed_from == [None, "2", "5"], streams


async def test_expiring_and_logs_followed() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        id = (await s.spawn(example_app(lifetime_limit_seconds=3, lifetime_warning_seconds=3)))["id"]
        items = [i async for i in s.status(id)]
        assert any(i["type"] == "expiring" and i["reason"] == "lifetime limit" for i in items), items
        text = "".join([t async for t in s.logs(id, follow=True)])
        assert "example-app listening" in text


async def test_pools_and_watch_list() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        name = unique("apool")
        await s.create_pool({"name": name, "template": example_app(labels={"pool": name}), "min_ready": 1, "max": 2})
        assert any(p["name"] == name for p in await s.list_pools())
        assert any(p["name"] == name for p in (await s.list_pools_page(limit=1000))["pools"])
        changes = s.watch_list(labels={"pool": name})
        snapshot = await changes.__anext__()
        assert snapshot["type"] == "snapshot"
        claimed = await s.claim(name, key=unique("k"), wait_seconds=30)
        assert claimed["state"] == "Ready"
        async for change in changes:
            if change["type"] == "backend" and change["backend"]["id"] == claimed["id"]:
                break
        await changes.aclose()  # type: ignore[attr-defined]
        assert (await s.resize_pool(name, min_ready=0, max=1))["max"] == 1
        assert (await s.get_pool(name))["claimed"] == 1
        assert (await s.delete_pool(name))["name"] == name
        with pytest.raises(SpawnerError) as e:
            await s.get_pool(name)
        assert (e.value.code, e.value.status) == ("not_found", 404)
        await s.terminate(claimed["id"], hard=True)


async def test_errors_and_operations() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        with pytest.raises(SpawnerError) as e:
            await s.get("nosuchbackend")
        assert (e.value.code, e.value.status) == ("not_found", 404)
        with pytest.raises(SpawnerError) as e:
            await AsyncSpawner(URL, "wrong").list()
        assert (e.value.code, e.value.status) == ("unauthorized", 401)
        with pytest.raises(SpawnerError) as e:
            await AsyncSpawner("http://127.0.0.1:9").get("a")
        assert (e.value.code, e.value.status) == ("unreachable", 0)
        assert await s.health() is True
        assert "spawner_backends" in await s.metrics()
        link = await s.login_link()
        assert "#login=" in link["url"]
        code = link["url"].split("#login=")[1]
        assert (await AsyncSpawner(URL).login(code))["token"] == TOKEN
        assert (await s.request("GET", "/healthz")).status_code == 200


async def test_access_connect_list_and_revoke() -> None:
    async with AsyncSpawner(URL, TOKEN) as s:
        b = await s.spawn(example_app(access={"mode": "token", "user": "alice"}))
        assert "spawner_token=" in b["connect_url"]
        shared = await s.connect(b["id"], "bob", reusable=True)
        assert "spawner_token=" in shared["connect_url"]
        assert sorted(u["user"] for u in (await s.access(b["id"]))["users"]) == ["alice", "bob"]
        await s.revoke(b["id"], "bob")
        assert [u["user"] for u in (await s.access(b["id"]))["users"]] == ["alice"]
        await s.terminate(b["id"], hard=True)
