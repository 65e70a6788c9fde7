"""A document app on FastAPI: every document gets its own backend (here `spawner
example-app`), the browser follows it starting, live, then goes to it.

    pip install ./clients/python fastapi uvicorn
    SPAWNER_URL=http://127.0.0.1:8080 SPAWNER_TOKEN=$(spawner token) python examples/fastapi/app.py
    open http://127.0.0.1:8000/docs/42

The token stays here, on the server: it can start and stop anything. The browser gets the
document's backend id and this app's narrow status route, which serves only backends this
app started.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
from pathlib import Path
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, StreamingResponse

from spawner_client import AsyncSpawner, SpawnerError, SpawnResponse

APP = "example-fastapi"
spawner = AsyncSpawner(os.environ.get("SPAWNER_URL", "http://127.0.0.1:8080"), os.environ.get("SPAWNER_TOKEN"))
app = FastAPI()
CLIENT_JS = Path(__file__).resolve().parents[2] / "clients" / "js" / "spawner.js"


async def backend_of(doc: str) -> SpawnResponse:
    """The document's backend: get-or-create by key, so every user of doc 42 shares one."""
    return await spawner.spawn(
        {
            "key": f"{APP}/{doc}",
            "executable": {"command": ["spawner", "example-app"]},
            "grace_period_seconds": 60,
            "labels": {"app": APP, "doc": doc},
        }
    )


@app.exception_handler(SpawnerError)
async def spawner_error(_: Request, e: SpawnerError) -> PlainTextResponse:
    # The API's code, status and message; show what the user can act on.
    return PlainTextResponse(f"{e.code}: {e.message}\n", status_code=404 if e.status == 404 else 502)


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return """<!doctype html><meta charset="utf-8"><title>Documents</title>
<h1>Documents</h1>
<form onsubmit="location.href='/docs/'+encodeURIComponent(this.doc.value);return false">
<input name="doc" value="42" pattern="[a-z0-9-]+"> <button>Open</button></form>"""


@app.get("/docs/{doc}", response_class=HTMLResponse)
async def document(doc: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,40}", doc):
        raise HTTPException(404)
    return page(doc, await backend_of(doc))


@app.get("/spawner.js")
async def client_module() -> FileResponse:
    # The JavaScript client, for the page (a real app would bundle it).
    return FileResponse(CLIENT_JS, media_type="text/javascript")


@app.get("/v1/backends/{id}/status/stream")
async def status_stream(id: str, last_event_id: Optional[str] = Header(None)) -> StreamingResponse:
    """The browser's status stream, through this app: only backends of this app, resumed
    from the browser's Last-Event-ID. The app follows Spawner's stream with its client
    (which itself resumes if its own connection drops) and passes each event on with its id."""
    if not re.fullmatch(r"[a-z0-9]{1,40}", id):
        raise HTTPException(404)
    record = await spawner.get(id)
    if record.get("spec", {}).get("labels", {}).get("app") != APP:
        raise HTTPException(404)
    last = int(last_event_id) if last_event_id and last_event_id.isdigit() else None

    async def events() -> AsyncIterator[str]:
        async for item in spawner.status(id, last_event_id=last):
            if item["type"] == "expiring":
                yield f"event: expiring\ndata: {json.dumps({'at': item['at'], 'reason': item['reason']})}\n\n"
            else:
                event = {k: v for k, v in item.items() if k not in ("type", "id")}
                yield f"id: {item['id']}\ndata: {json.dumps(event)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def page(doc: str, backend: SpawnResponse) -> str:
    """The document's page: its backend's status, live, and a link to it once Ready."""
    e = html.escape
    return f"""<!doctype html><meta charset="utf-8"><title>Document {e(doc)}</title>
<h1>Document {e(doc)}</h1>
<p>Backend <code id="backend">{e(backend["id"])}</code>: <strong id="state">{e(backend["state"])}</strong></p>
<p id="notice"></p>
<ol id="events"></ol>
<p><a id="open" hidden href="{e(backend["url"])}">Open the document</a></p>
<script type="module">
import {{ Spawner }} from "/spawner.js";
// No token here: the status route of this app needs none, and serves this app's backends only.
const spawner = new Spawner({{ url: location.origin }});
const $ = (id) => document.getElementById(id);
for await (const item of spawner.status({json.dumps(backend["id"])})) {{
  if (item.type === "expiring") {{
    $("notice").textContent = "This document closes at " + new Date(item.at).toLocaleTimeString() + " (" + item.reason + ")";
    continue;
  }}
  const li = document.createElement("li");
  li.textContent = item.state + (item.reason ? " (" + item.reason + ")" : "");
  $("events").append(li);
  $("state").textContent = item.state;
  $("open").hidden = item.state !== "Ready";
}}
</script>"""


if __name__ == "__main__":
    import uvicorn

    # PORT=0: any free port, printed once it listens (the tests read it).
    sock = socket.create_server(("127.0.0.1", int(os.environ.get("PORT", "8000"))))
    print(f"example-fastapi listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
