"""Many dashboard WebSocket clients in one process, counting every event each receives.

Run as ``python -m tests.load.wsclients SPEC.json`` (``WsClients`` below starts it): it
connects every client of the spec to /ws/tracking/ with its session cookie, prints
``READY`` when all are connected, then reads one line from stdin: ``STOP`` followed by
the JSON {tenant id: [event ids committed]}. It waits until every client has every
event of its tenant (or ``settle_seconds`` pass), closes the sockets and writes the
result JSON to the spec's ``out`` path, then prints ``DONE``.

A separate process, so the clients' own CPU does not share a GIL with the code that
produces the events; receive times are wall clock (``time.time()``), comparable with
the producer's on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Client:
    index: int
    tenant: int
    cookie: str
    received: dict[int, float] = field(default_factory=dict)  # event id -> wall time
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    closed_early: bool = False
    controls: int = 0  # heartbeats and other control messages


async def _connect(session, url: str, origin: str, client: Client, sem: asyncio.Semaphore):
    # daphne closes a handshake the application has not accepted within its connect
    # timeout (5 s); on a loaded machine a burst of sign-ins can take that long, so a
    # refused attempt is retried with backoff. Failures after the last are reported.
    async with sem:
        for attempt in range(6):
            try:
                return await session.ws_connect(
                    url,
                    headers={"Cookie": client.cookie, "Origin": origin},
                    heartbeat=None,
                    autoping=True,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=10),
                )
            except (TimeoutError, aiohttp.ClientError) as exc:
                if attempt == 5:
                    client.errors.append(f"connect: {exc!r}")
                    return None
                await asyncio.sleep(0.5 * 2**attempt)


async def _read(ws, client: Client, stopping: asyncio.Event) -> None:
    loads, now = json.loads, time.time
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            at = now()
            data = loads(msg.data)
            if "type" in data:  # control: heartbeat, resync, pong, alert
                client.controls += 1
                if data["type"] == "resync":
                    client.errors.append(f"resync: {data}")
                continue
            event_id = data["id"]
            if event_id in client.received:
                client.duplicates += 1
            else:
                client.received[event_id] = at
        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
            break
    if not stopping.is_set():
        client.closed_early = True
        client.errors.append(f"socket closed by the server (code {ws.close_code})")


async def main(spec: dict) -> None:
    clients = [
        Client(index=i, tenant=int(c["tenant"]), cookie=c["cookie"])
        for i, c in enumerate(spec["clients"])
    ]
    stopping = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(int(spec.get("connect_concurrency", 10)))
        sockets = await asyncio.gather(
            *(_connect(session, spec["url"], spec["origin"], c, sem) for c in clients)
        )
        readers = [
            asyncio.create_task(_read(ws, c, stopping))
            for ws, c in zip(sockets, clients, strict=True)
            if ws is not None
        ]
        connected = sum(ws is not None for ws in sockets)
        first_error = next((c.errors[0] for c in clients if c.errors), "")
        print(f"READY {connected} {first_error}".strip(), flush=True)

        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        expected = {
            int(k): set(v) for k, v in json.loads(line.removeprefix("STOP").strip()).items()
        }
        deadline = time.monotonic() + float(spec.get("settle_seconds", 30))
        while time.monotonic() < deadline:
            if all(expected.get(c.tenant, set()) <= c.received.keys() for c in clients):
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.gather(*(ws.close() for ws in sockets if ws is not None))
        await asyncio.gather(*readers, return_exceptions=True)

    result = {
        "connected": connected,
        "clients": [
            {
                "tenant": c.tenant,
                "received": {str(k): v for k, v in c.received.items()},
                "duplicates": c.duplicates,
                "errors": c.errors,
                "closed_early": c.closed_early,
                "controls": c.controls,
            }
            for c in clients
        ],
    }
    with open(spec["out"], "w") as handle:
        json.dump(result, handle)
    print("DONE", flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
