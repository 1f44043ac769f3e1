"""A WebSocket echo app for wsdrain's tests and the Autobahn comparison.

Python `websockets` with permessage-deflate on (its default), echoing every message.
Flags: --port, --max-size (bytes, default 64 MiB). It also answers plain HTTP on
/health, /status/<code> and POST /echo, and records what it saw for tests that ask
(GET /seen returns the request headers of the last upgrade as JSON).
"""

import argparse
import asyncio
import json
import signal

from websockets.asyncio.server import serve
from websockets.http11 import Response
from websockets.datastructures import Headers

LAST_UPGRADE_HEADERS = {}


def process_request(connection, request):
    path = request.path
    if path == "/health":
        return connection.respond(200, "ok\n")
    if path == "/seen":
        return Response(200, "OK", Headers([("Content-Type", "application/json")]),
                        json.dumps(LAST_UPGRADE_HEADERS).encode())
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        return connection.respond(code, f"refused with {code}\n")
    if path.startswith("/need-auth") and request.headers.get("Authorization") != "Bearer letmein":
        return connection.respond(401, "unauthorized\n")
    LAST_UPGRADE_HEADERS.clear()
    for k, v in request.headers.raw_items():
        LAST_UPGRADE_HEADERS.setdefault(k, v)
    return None


def pick_subprotocol(connection, subprotocols):
    """The first subprotocol the client offers, or none when it offers none."""
    return subprotocols[0] if subprotocols else None


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except Exception:
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9002)
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    args = ap.parse_args()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(echo, "127.0.0.1", args.port, process_request=process_request,
                     max_size=args.max_size, select_subprotocol=pick_subprotocol,
                     compression="deflate", ping_interval=None):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
