"""agentwire: the Python client and publisher of the agentwire push gateway.

```python
from agentwire import Client, Publisher, publish_sync

async with Client("wss://…", token="…") as client:
    sub = await client.join("agent-1")
    async for item in sub:          # Event | Gap | Message | MessageLost, in order
        ...

publish_sync("https://…", token="…", channel="agent-1", kind="status", data={"text": "hi"})
```
"""

__version__ = "0.1.0"

from ._types import Event, Gap, Joined, Position, PublishResult  # noqa: E402
from .errors import (  # noqa: E402
    AgentWireError,
    ClosedError,
    ExhaustedError,
    ProtocolError,
    RefusedError,
    ServerError,
    UnauthorizedError,
)
from ._chunks import Message, MessageLost, split_message  # noqa: E402
from ._stream import Coalescer, PublishStream, publish_message  # noqa: E402
from .client import Client, Subscription  # noqa: E402
from .publisher import Publisher, publish_sync  # noqa: E402

__all__ = [
    "AgentWireError",
    "Client",
    "ClosedError",
    "Coalescer",
    "Event",
    "ExhaustedError",
    "Gap",
    "Joined",
    "Message",
    "MessageLost",
    "Position",
    "ProtocolError",
    "PublishResult",
    "PublishStream",
    "Publisher",
    "RefusedError",
    "ServerError",
    "Subscription",
    "UnauthorizedError",
    "publish_message",
    "publish_sync",
    "split_message",
    "__version__",
]
