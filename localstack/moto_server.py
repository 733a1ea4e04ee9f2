"""moto's server without its registry of model instances.

moto keeps every model object it ever creates in a class-level list
(`BaseModel.instances_tracked`), read only by its `/moto-api/data.json`
dashboard and emptied only by a full reset. Its copies count too: a
DynamoDB `TransactWriteItems` deep-copies each table it writes, as its
rollback backup, once per item of the transaction, so every commit of the
dispatcher (a head update and two puts per event) keeps three copies of
the events table alive for good. Under the chaos soak that grew the
endpoint by about 1.4 GB a minute and slowed every call with it (see
docs/benchmarks.md, "What moto changes").

This runs moto's own server with model objects created as plain objects,
not recorded anywhere. Nothing else changes; the dashboard's model list is
empty. Should a moto release move `BaseModel`, the server runs as it is.
"""

import sys

try:
    from moto.core.common_models import BaseModel
except ImportError:  # pragma: no cover - another moto layout
    BaseModel = None

if BaseModel is not None:

    def _untracked(cls, *args, **kwargs):
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(_untracked)

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
