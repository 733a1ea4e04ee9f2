"""The shape of a chat-platform bridge: follow an agent's channel and forward
each event (here: print it), resuming after restarts from the durable cursor.

    export AGENTWIRE_URL=ws://127.0.0.1:8080
    export AGENTWIRE_TOKEN=$(agentwire token --tenant demo --sub relay --channels 'agent-*')
    python examples/relay.py agent-1

Stop it (Ctrl-C) and start it again: it goes on after the last event it
forwarded. The client acknowledges what the loop below took (`auto_ack`), so
the gateway's durable cursor for this principal moves with it; a restart
joins with `since=None` (the durable cursor) and gets everything after it
that is still retained. A `Gap` means events expired before the relay came
back: tell the chat so.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from agentwire import Client, Event, Gap


async def forward(text: str) -> None:
    """Where a real bridge posts to Slack, Discord, Teams..."""
    print(text, flush=True)


async def relay(url: str, token: str, channel: str) -> None:
    async with Client(url, token=token) as client:
        client.on_state(lambda s: print(f"# {s}", file=sys.stderr))
        sub = await client.join(channel)  # from the durable cursor
        joined = await sub.wait_joined()  # a refusal (forbidden...) raises here
        print(f"# joined {channel} at {joined.head}", file=sys.stderr, flush=True)
        async for item in sub:
            if isinstance(item, Gap):
                await forward(f"[{channel}] events {item.from_seq}..{item.to_seq} expired before they could be relayed")
            elif isinstance(item, Event):
                await forward(f"[{channel} #{item.seq}] {item.kind}: {json.dumps(item.data)}")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: relay.py CHANNEL  (AGENTWIRE_URL, AGENTWIRE_TOKEN in the environment)")
    url = os.environ.get("AGENTWIRE_URL", "ws://127.0.0.1:8080")
    token = os.environ["AGENTWIRE_TOKEN"]

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)  # leaving `async with` acks and closes
        try:
            await relay(url, token, sys.argv[1])
        except asyncio.CancelledError:
            print("# stopped", file=sys.stderr)

    asyncio.run(run())


if __name__ == "__main__":
    main()
