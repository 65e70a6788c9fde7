"""The blocking client against a real `spawner serve`: every call, its answers, its errors."""

from __future__ import annotations

import re
from typing import List
from urllib.parse import urlparse

import pytest

from conftest import TOKEN, URL, Relay, example_app, unique
from spawner_client import Spawner, SpawnerError, StatusItem


@pytest.fixture
def s() -> Spawner:
    return Spawner(URL, TOKEN)


def test_spawn_is_get_or_create_and_the_record_follows(s: Spawner) -> None:
    key = unique("doc")
    first = s.spawn(example_app(key=key, labels={"owner": "u1"}))
    assert first["created"] is True and first["key"] == key
    again = s.spawn(example_app(key=key))
    assert again["created"] is False and again["id"] == first["id"]
    ready = s.wait_ready(first["id"], timeout=30)
    assert ready["state"] == "Ready" and ready["type"] == "event"
    assert s.is_ready(first["id"]) is True
    assert s.last_event(first["id"])["state"] == "Ready"
    record = s.get(first["id"])
    assert record["spec"]["labels"] == {"owner": "u1"}
    assert record["events"][-1]["state"] == "Ready"
    assert s.terminate(first["id"])["state"] == "Terminating"
    states = [i.get("state") for i in s.status(first["id"]) if i["type"] == "event"]
    assert states[-1] == "Terminated"
    with pytest.raises(SpawnerError) as e:
        s.is_ready(first["id"])
    assert (e.value.code, e.value.status) == ("gone", 410)


def test_list_filters_and_pages(s: Spawner) -> None:
    owner = unique("owner")
    ids = [s.spawn(example_app(key=f"{owner}-{i}", labels={"owner": owner}))["id"] for i in range(3)]
    assert sorted(b["id"] for b in s.list(labels={"owner": owner})) == sorted(ids)
    assert len(s.list(label=f"owner={owner}")) == 3
    assert [b["id"] for b in s.list(key=f"{owner}-1")] == [ids[1]]
    page = s.list_page(labels={"owner": owner}, limit=2)
    assert len(page["backends"]) == 2 and page.get("next")
    rest = s.list_page(labels={"owner": owner}, limit=2, after=page["next"])
    assert len(rest["backends"]) == 1 and "next" not in rest
    for id in ids:
        s.wait_ready(id, timeout=30)
    assert len(s.list(labels={"owner": owner}, state="Ready")) == 3
    for id in ids:
        s.terminate(id, hard=True)
    with pytest.raises(SpawnerError) as e:
        s.list(state="Sleepy")
    assert (e.value.code, e.value.status) == ("invalid_query", 400)


def test_wait_ready_gone_and_timeout(s: Spawner) -> None:
    failing = s.spawn({"executable": {"command": ["sh", "-c", "exit 3"]}})
    with pytest.raises(SpawnerError) as e:
        s.wait_ready(failing["id"], timeout=30)
    assert e.value.code == "gone" and "Failed: exited with code 3" in e.value.message
    silent = s.spawn({"executable": {"command": ["sleep", "60"]}})
    with pytest.raises(SpawnerError) as e:
        s.wait_ready(silent["id"], timeout=0.3)
    assert (e.value.code, e.value.status) == ("timeout", 0)
    assert s.is_ready(silent["id"]) is False
    s.terminate(silent["id"], hard=True)


def test_a_resumed_status_stream_loses_no_event_and_repeats_none(s: Spawner, relay: Relay) -> None:
    through = Spawner(relay.url, TOKEN)
    id = s.spawn(example_app())["id"]
    s.wait_ready(id, timeout=30)
    # The first connection dies right after event 2 of the replay (3 to 5 never arrive on
    # it); the second is cut while live, after Ready, before the events of the terminate.
    relay.break_after_event(2)
    seen: List[StatusItem] = []
    for item in through.status(id):
        assert item["type"] == "event"
        seen.append(item)
        if item.get("state") == "Ready":
            relay.cut()
            s.terminate(id)
    ids = [i["id"] for i in seen if i["type"] == "event"]
    assert ids == list(range(1, len(ids) + 1))
    record = s.get(id)
    assert [(i.get("state"), i.get("time"), i.get("reason")) for i in seen] == [
        (e.get("state"), e.get("time"), e.get("reason")) for e in record["events"]
    ]
    streams = [h for h in relay.requests if f"/v1/backends/{id}/status/stream" in h]
    resumed_from = [m.group(1) if (m := re.search(r"^last-event-id: (\d+)$", h, re.I | re.M)) else None for h in streams]
    assert resumed_from == [None, "2", "5"], streams


def test_a_stream_that_cannot_be_resumed_is_stream_broken() -> None:
    with pytest.raises(SpawnerError) as e:
        list(Spawner("http://127.0.0.1:9", retries=1).status("a"))
    assert (e.value.code, e.value.status) == ("stream_broken", 0)


def test_expiring_is_yielded(s: Spawner) -> None:
    id = s.spawn(example_app(lifetime_limit_seconds=3, lifetime_warning_seconds=3))["id"]
    items = list(s.status(id))
    expiring = [i for i in items if i["type"] == "expiring"]
    assert expiring and expiring[0]["reason"] == "lifetime limit", items
    assert items[-1].get("state") == "Terminated"


def test_keepalive(s: Spawner) -> None:
    id = s.spawn(example_app())["id"]
    answer = s.keepalive(id, 600)
    assert answer["id"] == id
    assert s.get(id)["busy_until"] == answer["busy_until"]
    with pytest.raises(SpawnerError) as e:
        s.keepalive(id, 0)
    assert (e.value.code, e.value.status) == ("invalid_field", 400)
    s.terminate(id, hard=True)


def test_access_connect_list_and_revoke(s: Spawner) -> None:
    b = s.spawn(example_app(access={"mode": "token", "user": "alice", "user_data": {"role": "owner"}}))
    assert b["connect_url"].startswith(b["url"]) and "spawner_token=" in b["connect_url"]
    shared = s.connect(b["id"], "bob", ttl_seconds=30)
    assert "spawner_token=" in shared["connect_url"]
    held = s.access(b["id"])
    assert held["mode"] == "token"
    assert sorted(u["user"] for u in held["users"]) == ["alice", "bob"]
    assert next(u for u in held["users"] if u["user"] == "alice")["user_data"] == {"role": "owner"}
    s.revoke(b["id"], "bob")
    assert [u["user"] for u in s.access(b["id"])["users"]] == ["alice"]
    with pytest.raises(SpawnerError) as e:
        s.revoke(b["id"], "bob")
    assert (e.value.code, e.value.status) == ("not_found", 404)
    opened = s.spawn(example_app())
    with pytest.raises(SpawnerError) as e:
        s.connect(opened["id"], "carol")
    assert (e.value.code, e.value.status) == ("open_access", 409)
    s.terminate(b["id"], hard=True)
    s.terminate(opened["id"], hard=True)


def test_logs_and_logs_followed(s: Spawner) -> None:
    id = s.spawn({"executable": {"command": ["sh", "-c", "echo one; echo two >&2; sleep 0.3; echo three"]}})["id"]
    followed = "".join(s.logs(id, follow=True))
    for line in ("one", "two", "three"):
        assert re.search(rf"^{line}$", followed, re.M), followed
    assert "three" in s.logs(id)


def test_pools(s: Spawner) -> None:
    name = unique("pool")
    assert s.create_pool({"name": name, "template": example_app(grace_period_seconds=60), "min_ready": 1, "max": 3})["name"] == name
    with pytest.raises(SpawnerError) as e:
        s.create_pool({"name": name, "template": example_app(), "min_ready": 0, "max": 1})
    assert (e.value.code, e.value.status) == ("pool_exists", 409)
    assert any(p["name"] == name for p in s.list_pools())
    assert any(p["name"] == name for p in s.list_pools_page(limit=1000)["pools"])
    key = unique("user")
    claimed = s.claim(name, key=key, labels={"owner": key}, wait_seconds=30)
    assert claimed["created"] is True and claimed["state"] == "Ready"
    again = s.claim(name, key=key)
    assert again["created"] is False and again["id"] == claimed["id"]
    resized = s.resize_pool(name, min_ready=0, max=2)
    assert (resized["min_ready"], resized["max"]) == (0, 2)
    assert s.get_pool(name)["claimed"] == 1
    assert s.delete_pool(name)["name"] == name
    with pytest.raises(SpawnerError) as e:
        s.claim(name, key=unique("k"))
    assert (e.value.code, e.value.status) == ("not_found", 404)
    s.terminate(claimed["id"], hard=True)


def test_watch_list(s: Spawner) -> None:
    owner = unique("watcher")
    changes = s.watch_list(labels={"owner": owner})
    first = next(changes)
    assert first["type"] == "snapshot" and first["backends"] == []
    id = s.spawn(example_app(labels={"owner": owner}))["id"]
    for change in changes:
        assert change["type"] == "backend" and change["backend"]["id"] == id
        if change["backend"]["state"] == "Ready":
            break
    changes.close()  # type: ignore[attr-defined]
    s.terminate(id, hard=True)


def test_watch_list_reconnects_with_a_fresh_snapshot(s: Spawner, relay: Relay) -> None:
    owner = unique("rewatch")
    id = s.spawn(example_app(labels={"owner": owner}))["id"]
    changes = Spawner(relay.url, TOKEN).watch_list(labels={"owner": owner}, state="Terminated")
    assert next(changes) == {"type": "snapshot", "backends": []}
    relay.cut()
    s.terminate(id, hard=True)
    # The list as it is now, whatever happened while the connection was down.
    for change in changes:
        backends = change["backends"] if change["type"] == "snapshot" else [change["backend"]]
        if any(b["id"] == id and b["state"] == "Terminated" for b in backends):
            break
    changes.close()  # type: ignore[attr-defined]
    assert len([h for h in relay.requests if h.startswith("GET /v1/backends/stream")]) == 2


def test_errors_carry_code_status_and_message(s: Spawner) -> None:
    cases = [
        (lambda: s.get("nosuchbackend"), "not_found", 404),
        (lambda: s.spawn({"executable": {"command": ["x"]}, "grace_period_secs": 3}), "invalid_body", 400),
        (lambda: s.spawn({"executable": {"command": ["x"], "env": {"PORT": "1"}}}), "invalid_field", 400),
        (lambda: Spawner(URL, "wrong").list(), "unauthorized", 401),
        (lambda: Spawner("http://127.0.0.1:9").get("a"), "unreachable", 0),
    ]
    for call, code, status in cases:
        with pytest.raises(SpawnerError) as e:
            call()
        assert (e.value.code, e.value.status) == (code, status), e.value
        assert e.value.message


def test_operations(s: Spawner) -> None:
    assert s.health() is True
    assert "spawner_backends" in s.metrics()
    link = s.login_link()
    code = urlparse(link["url"]).fragment.removeprefix("login=")
    assert Spawner(URL).login(code)["token"] == TOKEN
    with pytest.raises(SpawnerError) as e:
        Spawner(URL).login(code)
    assert (e.value.code, e.value.status) == ("invalid_login_code", 401)
    resp = s.request("GET", "/v1/backends", params=[("limit", "1")])
    assert isinstance(resp.json()["backends"], list)


def test_a_sleeping_backend_is_woken_by_wake(s: Spawner) -> None:
    import time

    b = s.spawn(example_app(idle_action="sleep", grace_period_seconds=1))
    s.wait_ready(b["id"], timeout=30)
    # Already awake: a no-op that says so.
    assert s.wake(b["id"])["state"] == "Ready"
    deadline = time.monotonic() + 30
    while s.last_event(b["id"])["state"] != "Sleeping":
        assert time.monotonic() < deadline, "not Sleeping within 30 s"
        time.sleep(0.1)
    assert s.wake(b["id"]) == {"id": b["id"], "state": "Waking"}
    while s.last_event(b["id"])["state"] != "Ready":
        assert time.monotonic() < deadline, "not Ready again within 30 s"
        time.sleep(0.05)
    # After the sleep: Waking (with the runtime's notes, more Waking events), then Ready.
    states = [e["state"] for e in s.get(b["id"])["events"]]
    # (It may be asleep again by now: the wake is what followed its first sleep.)
    first = states.index("Sleeping")
    rest = states[first + 1 :]
    woken = rest[: rest.index("Sleeping")] if "Sleeping" in rest else rest
    assert woken[0] == "Waking" and woken[-1] == "Ready", states
    assert set(woken[:-1]) == {"Waking"}, states
    s.terminate(b["id"], hard=True)
    with pytest.raises(SpawnerError) as e:
        s.wake(b["id"])
    assert (e.value.code, e.value.status) == ("gone", 410)
