"""A Server-Sent Events app for the tests: `GET /sse` streams `id: N` / `data: N` events,
one every --every seconds, each written in two pieces (so a close that comes between
them has to wait for the event's end), resuming after `Last-Event-ID`. Plain asyncio,
chunked HTTP/1.1, one stream per connection. With --cors every answer carries
`Access-Control-Allow-Origin: *`, for a browser's cross-origin `EventSource`.

A WebSocket upgrade is accepted too, so one app can stand behind a pod that serves both
kinds: the socket sends nothing, and answers a close frame with a close frame."""

import argparse
import asyncio
import base64
import hashlib

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    key: str) -> None:
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    try:
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if second & 0x80 else b""
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:  # close: answer it with the same code, then end
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                writer.write(bytes([0x88, len(payload[:125])]) + payload[:125])
                await writer.drain()
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, every: float,
                cors: bool) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    first = 1
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        if name.strip().lower() == "last-event-id" and value.strip().isdigit():
            first = int(value.strip()) + 1
    if headers.get("upgrade", "").lower() == "websocket" and "sec-websocket-key" in headers:
        await websocket(reader, writer, headers["sec-websocket-key"])
        return
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 + (b"Access-Control-Allow-Origin: *\r\n" if cors else b"")
                 + b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")

    def chunk(text: str) -> bytes:
        data = text.encode()
        return b"%x\r\n%s\r\n" % (len(data), data)

    n = first
    try:
        while True:
            writer.write(chunk(f"id: {n}\n"))
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(chunk(f"data: {n}\n\n"))
            await writer.drain()
            n += 1
            await asyncio.sleep(every)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--cors", action="store_true")
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, args.every, args.cors), "127.0.0.1", args.port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
