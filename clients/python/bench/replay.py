"""Replays a channel from its start and times it, for `agentwire-bench
--only clients`: joins from `{epoch, 0}`, consumes N events through
`async for`, and prints one JSON line (events, ms to the first, ms to the
last).

    python bench/replay.py URL TOKEN CHANNEL EPOCH N
"""

import asyncio
import json
import sys
import time

from agentwire import Client, Event, Position


async def main(url: str, token: str, channel: str, epoch: str, n: int) -> None:
    t0 = time.perf_counter()
    first = None
    got = 0
    async with Client(url, token=token, ack_debounce=None) as client:
        sub = await client.join(channel, since=Position(epoch, 0))
        async for item in sub:
            if isinstance(item, Event):
                got += 1
                if first is None:
                    first = time.perf_counter() - t0
                if item.seq != got:
                    sys.exit(f"replay: seq {item.seq} at position {got}")
                if got == n:
                    break
    elapsed = time.perf_counter() - t0
    print(json.dumps({"events": got, "first_ms": (first or 0) * 1000, "elapsed_ms": elapsed * 1000}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit("usage: replay.py URL TOKEN CHANNEL EPOCH N")
    url, token, channel, epoch, n = sys.argv[1:]
    asyncio.run(main(url, token, channel, epoch, int(n)))
