#!/usr/bin/env python3
"""Spawn-to-Ready latency of container backends, measured through the HTTP API.

Starts nothing itself: point it at a running `spawner serve` (with the Docker runtime) and an
image that is present on the engine. It spawns N backends one after the other, then N at
once, and reports for each round the median and spread of the time from the `Submitted`
event to the `Ready` event (both recorded by the server, so the client's own delays do not
count), then terminates them. Only the standard library is used; all traffic goes to the
given server.

    scripts/bench-docker-spawn.py --url http://127.0.0.1:8080 --image spawner-test/busybox:1 -n 20
"""

import argparse
import concurrent.futures
import datetime
import json
import statistics
import sys
import time
import urllib.request


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def spawn_and_wait(base, image, patience):
    created = call(base, "POST", "/v1/backends",
                   {"executable": {"image": image}, "grace_period_seconds": 600})
    bid = created["id"]
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        rec = call(base, "GET", f"/v1/backends/{bid}")
        times = {e["state"]: parse_time(e["time"]) for e in rec["events"]}
        if "Ready" in times:
            return bid, (times["Ready"] - times["Submitted"]).total_seconds()
        if rec["state"] in ("Failed", "Swept", "Terminated"):
            raise SystemExit(f"backend {bid} ended as {rec['state']}: {rec['events'][-1]}")
        time.sleep(0.01)
    raise SystemExit(f"backend {bid} not Ready within {patience} s")


def report(label, seconds):
    seconds = sorted(seconds)
    print(f"{label}: n={len(seconds)} median={statistics.median(seconds) * 1000:.0f} ms "
          f"min={seconds[0] * 1000:.0f} ms max={seconds[-1] * 1000:.0f} ms")


def stop_all(base, ids):
    for bid in ids:
        call(base, "POST", f"/v1/backends/{bid}/terminate", {"hard": False})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--image", default="spawner-test/busybox:1")
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--patience", type=float, default=120.0)
    args = ap.parse_args()
    base = args.url.rstrip("/")

    ids, seq = [], []
    for _ in range(args.n):
        bid, secs = spawn_and_wait(base, args.image, args.patience)
        ids.append(bid)
        seq.append(secs)
        # One at a time: each stops before the next starts, so the engine is idle.
        stop_all(base, [bid])
    report(f"sequential spawns of {args.image}", seq)

    time.sleep(2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.n) as pool:
        results = list(pool.map(lambda _: spawn_and_wait(base, args.image, args.patience),
                                range(args.n)))
    stop_all(base, [bid for bid, _ in results])
    report(f"{args.n} concurrent spawns of {args.image}", [s for _, s in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
