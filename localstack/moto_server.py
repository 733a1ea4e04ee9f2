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
not recorded anywhere; the dashboard's model list is empty.

It also makes DynamoDB behave as one consistent store under concurrent
requests (moto's server answers each request on its own thread):

- every DynamoDB backend call runs under one lock. Without it a
  `TransactWriteItems` deep-copying a table while another request writes
  to it fails ("dictionary changed size during iteration"), and a rolled
  back transaction put back its whole-table copy, undoing the writes other
  requests had made meanwhile (a committed event or head could vanish);
- a `TransactWriteItems` backs up only the items it touches, not a deep
  copy of each table it names once per item (which made every commit cost
  the size of the events table, and grow slower as a test run went on).

Should a moto release move what this patches, the server runs as it is.
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

import copy  # noqa: E402
import functools  # noqa: E402
import threading  # noqa: E402

try:
    import moto.dynamodb.models as _ddb
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table
except ImportError:  # pragma: no cover - another moto layout
    _ddb = None

if _ddb is not None:
    _lock = threading.RLock()

    def _serialised(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            with _lock:
                return fn(*args, **kwargs)

        return call

    class _TablesNotCopied:
        """`copy` for moto's transaction code: tables are not copied (the
        patched transaction backs up its items itself), anything else is."""

        def __getattr__(self, name):
            return getattr(copy, name)

        @staticmethod
        def deepcopy(x, memo=None):
            return x if isinstance(x, Table) else copy.deepcopy(x, memo)

    _original_transact = DynamoDBBackend.transact_write_items

    def _transact_write_items(self, transact_items):
        # (table, hash, range) -> the item as it was (None: absent).
        backup = {}
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                attrs = op.get("Key") or op.get("Item") or {}
                hk = DynamoType(attrs[table.hash_key_attr])
                rk = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
            except (KeyError, StopIteration, AttributeError, TypeError):
                continue  # moto's own validation says what is wrong
            slot = (table.name, str(hk), str(rk))
            if slot not in backup:
                old = table.get_item(hk, rk)
                backup[slot] = (table, hk, rk, copy.deepcopy(old) if old is not None else None)
        _ddb.copy = _TablesNotCopied()
        try:
            return _original_transact(self, transact_items)
        except Exception:
            for table, hk, rk, old in backup.values():
                if old is None:
                    table.delete_item(hk, rk)
                else:
                    table.put_item(old.to_json()["Attributes"])
            raise
        finally:
            _ddb.copy = copy

    DynamoDBBackend.transact_write_items = _transact_write_items
    for _name, _fn in list(vars(DynamoDBBackend).items()):
        if callable(_fn) and not _name.startswith("_"):
            setattr(DynamoDBBackend, _name, _serialised(_fn))

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
