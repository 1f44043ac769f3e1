#!/usr/bin/env python3
"""A TLS-originating shim for clients that speak only plaintext: accepts TCP on a
loopback port and, per connection, opens TLS to a target and relays bytes both ways.

The Autobahn fuzzing client (kosoku) has no `wss://`; through this shim it tests
wsdrain's TLS termination with the same cases as plaintext
(`scripts/autobahn_compare.py --tls`). It passes on what each side does at the end: an
EOF from the TLS side (close_notify or FIN) becomes a half-close towards the client, and
the client's EOF closes the TLS session (close_notify, then FIN), since TLS 1.3 as
Python's ssl module drives it cannot half-close.

    scripts/tls_client_shim.py --listen 9001 --connect 127.0.0.1:9443 --cafile tls.crt
"""

import argparse
import asyncio
import os
import signal
import ssl


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, ssl.SSLError, OSError, RuntimeError):
            writer.close()


async def serve(creader, cwriter, host: str, port: int, context: ssl.SSLContext) -> None:
    try:
        treader, twriter = await asyncio.open_connection(
            host, port, ssl=context, server_hostname="localhost")
    except (ConnectionError, ssl.SSLError, OSError):
        cwriter.close()
        return
    await asyncio.gather(pipe(creader, twriter), pipe(treader, cwriter))
    for w in (cwriter, twriter):
        w.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True, help="loopback port for the client")
    ap.add_argument("--connect", required=True, help="HOST:PORT speaking TLS")
    ap.add_argument("--cafile", required=True, help="the certificate to trust")
    args = ap.parse_args()
    # Stopped by its owner: every relay goes with the process, nothing to tidy.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    host, _, port = args.connect.rpartition(":")
    context = ssl.create_default_context(cafile=args.cafile)
    context.set_alpn_protocols(["http/1.1"])
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, host, int(port), context), "127.0.0.1", args.listen,
        backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
