"""Follows one channel and prints a line per delivery, for the cross-client
resume benchmark (`agentwire-bench --only clients`): `joined` each time a
join is answered (the first and every re-join), and `{"seq": N}` per event. Reconnects without a delay,
to measure the resume itself.

    python bench/follow.py URL TOKEN CHANNEL
"""

import asyncio
import json
import sys

from agentwire import Client, Event, Gap


async def main(url: str, token: str, channel: str) -> None:
    async with Client(url, token=token, min_reconnect_delay=0.0, ack_debounce=None) as client:
        client.on_joined(lambda _j: print("joined", flush=True))
        sub = await client.join(channel, since="head")
        async for item in sub:
            if isinstance(item, Event):
                print(json.dumps({"seq": item.seq}), flush=True)
            elif isinstance(item, Gap):
                print(json.dumps({"gap": [item.from_seq, item.to_seq]}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: follow.py URL TOKEN CHANNEL")
    try:
        asyncio.run(main(*sys.argv[1:]))
    except KeyboardInterrupt:
        pass
