"""The memory a Python process spends per channel held or per connection of
the Python client, for `agentwire-bench --only clients`: the bytes Python
has allocated and still holds (`tracemalloc`, after `gc.collect()`), before
and after one client joined N channels or N clients with no channel
connected, printed as one JSON line (as clients/ts/bench/memory.ts does for
Node). It lives here, beside the harness, and runs in the venv of
clients/python:

    clients/python/.venv/bin/python bench/clients/memory.py URL TOKEN N channels|connections
"""

import asyncio
import gc
import json
import sys
import time
import tracemalloc

from agentwire import Client


def kept() -> int:
    gc.collect()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def connected(client: Client) -> None:
    ready = asyncio.Event()
    client.on_state(lambda s: ready.set() if s == "connected" else None)
    client.start()
    if client.state != "connected":
        await asyncio.wait_for(ready.wait(), 30)


async def main(url: str, token: str, n: int, what: str) -> None:
    tracemalloc.start()
    warm = Client(url, token=token, ack_debounce=None)
    names: set[str] = set()
    all_joined = asyncio.Event()

    def on_joined(j) -> None:  # noqa: ANN001
        names.add(j.channel)
        if len(names) == n + 1:
            all_joined.set()

    warm.on_joined(on_joined)
    clients: list[Client] = []
    if what == "channels":
        await warm.join("mem-warm", since="head")
        while "mem-warm" not in names:
            await asyncio.sleep(0.01)
    else:
        await connected(warm)
    await asyncio.sleep(0.3)
    before = kept()
    t0 = time.perf_counter()
    if what == "channels":
        for i in range(n):
            await warm.join(f"mem-{i}", since="head")
        await asyncio.wait_for(all_joined.wait(), 120)
    else:
        clients = [Client(url, token=token, ack_debounce=None) for _ in range(n)]
        await asyncio.gather(*(connected(c) for c in clients))
    took = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    after = kept()
    print(json.dumps({what: n, "joined_ms": took * 1000, "bytes": after - before}), flush=True)
    for c in [warm, *clients]:
        await c.close()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[4] not in ("channels", "connections"):
        sys.exit("usage: memory.py URL TOKEN N channels|connections")
    url, token, n, what = sys.argv[1:]
    asyncio.run(main(url, token, int(n), what))
