import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wsdrain_hint import Reconnect


async def follow(url, on_message, policy=None):
    """The websockets library's own reconnect loop, `async for ws in connect(url)`, with
    the hint: when wsdrain closes the connection, wait the hint, then let the loop
    connect again (it does so at once after a connection that was open). A connect that
    fails (refused, or 503 from a pod that is draining) is retried by the library's own
    exponential backoff.

    compression=None turns permessage-deflate off: wsdrain relays it end to end, so it
    is the app's choice, not wsdrain's; websockets enables it by default, which costs a
    zlib context (tens of KiB) per connection and CPU per message. Keep the default when
    your messages are large and compress well."""
    policy = policy or Reconnect()
    async for ws in connect(url, compression=None):
        policy.opened()
        try:
            async for message in ws:
                on_message(message)
            closed = ws.close_exc  # ended with 1000/1001: no exception
        except ConnectionClosed as exc:
            closed = exc
        await asyncio.sleep(policy.delay_after(closed))
