import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from wsdrain_hint import Reconnect


async def follow(url, on_message, outbox, policy=None):
    """Stays connected to `url()` for good: hands every message to `on_message`, sends
    what is put in `outbox` (an asyncio.Queue) and, when wsdrain closes the connection,
    waits the reconnect hint before connecting again. A message whose send fails is kept
    and sent first on the next connection, so nothing is lost across the move."""
    policy = policy or Reconnect()
    carry = []  # the message whose send failed, if any
    while True:
        closed = None
        try:
            async with connect(url(), compression=None) as ws:
                policy.opened()

                async def sender():
                    while True:
                        message = carry.pop() if carry else await outbox.get()
                        if ws.state is not State.OPEN:  # closing: keep it for the next one
                            carry.append(message)
                            return
                        await ws.send(message)  # written at once; wsdrain delivers it

                sending = asyncio.create_task(sender())
                try:
                    async for message in ws:
                        on_message(message)
                    closed = ws.close_exc  # ended with 1000/1001: no exception
                finally:
                    sending.cancel()
        except ConnectionClosed as exc:
            closed = exc
        except (OSError, InvalidHandshake, TimeoutError):
            pass  # could not connect: the backoff applies
        await asyncio.sleep(policy.delay_after(closed))
