"""permessage-deflate negotiated end to end through wsdrain, between a real Python
`websockets` client and server, with compression really on the wire."""

import asyncio

from websockets.asyncio.client import connect

from conftest import metric


def test_permessage_deflate_end_to_end(wsdrain):
    listen, admin = wsdrain
    message = "compress me " * 5000  # 60 kB of very compressible text

    async def run():
        async with connect(f"ws://127.0.0.1:{listen}/", compression="deflate") as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            for _ in range(5):
                await ws.send(message)
                assert await ws.recv() == message
            return ext

    ext = asyncio.run(asyncio.wait_for(run(), 20))
    assert "permessage-deflate" in ext, f"extension negotiated by the app reached the client: {ext!r}"
    sent = metric(admin, 'websocket_bytes_total{direction="client_to_app"}')
    # 5 x 60 kB of text went through as compressed frames: far fewer bytes on the wire.
    assert 0 < sent < 5 * len(message) / 10, f"client-to-app bytes on the wire: {sent}"
    assert metric(admin, 'websocket_messages_total{direction="client_to_app"}') == 5
    assert metric(admin, 'websocket_messages_total{direction="app_to_client"}') == 5
