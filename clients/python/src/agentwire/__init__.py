"""agentwire: the Python client and publisher of the agentwire push gateway.

```python
from agentwire import Client, Publisher, publish_sync

async with Client("wss://…", token="…") as client:
    sub = await client.join("agent-1")
    async for item in sub:          # Event | Gap | Message | MessageLost, in order
        ...

publish_sync("https://…", token="…", channel="agent-1", kind="status", data={"text": "hi"})

async with Publisher("https://…", token="…") as p:   # reads need a `channels` grant
    page = await p.history("agent-1", after=0, limit=100)   # HistoryPage: events, gap, next_after
    who = await p.presence("agent-1")
    r = await p.publish_batch("agent-1", [{"kind": "a", "data": 1}, {"kind": "b", "data": 2}])
    # r.status 201 (committed: r.events, each id, seq, epoch), 200 (a repeat) or 202 (r.queued)
```
"""

__version__ = "0.1.0"

from ._types import (  # noqa: E402
    BatchEvent,
    BatchResult,
    ChannelHealth,
    ChannelInfo,
    Event,
    Gap,
    HistoryPage,
    Joined,
    Position,
    Presence,
    PublishedEvent,
    PublishResult,
    Resync,
    StateChange,
    WebhookInfo,
)
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
from .admin import (  # noqa: E402
    Admin,
    IssuerKeys,
    Limits,
    Revocation,
    RevokeResult,
    TenantLimits,
    TrustedIssuer,
    Webhook,
    WebhookMode,
)
from .errors import ConflictError, NotFoundError  # noqa: E402

__all__ = [
    "Admin",
    "AgentWireError",
    "BatchEvent",
    "BatchResult",
    "ChannelHealth",
    "ChannelInfo",
    "Client",
    "ClosedError",
    "ConflictError",
    "Coalescer",
    "Event",
    "ExhaustedError",
    "Gap",
    "HistoryPage",
    "IssuerKeys",
    "Joined",
    "Limits",
    "Message",
    "MessageLost",
    "NotFoundError",
    "Position",
    "Presence",
    "ProtocolError",
    "PublishResult",
    "PublishStream",
    "PublishedEvent",
    "Publisher",
    "RefusedError",
    "Resync",
    "Revocation",
    "RevokeResult",
    "ServerError",
    "StateChange",
    "Subscription",
    "TenantLimits",
    "TrustedIssuer",
    "UnauthorizedError",
    "Webhook",
    "WebhookInfo",
    "WebhookMode",
    "publish_message",
    "publish_sync",
    "split_message",
    "__version__",
]
