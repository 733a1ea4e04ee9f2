"""The patched moto server (moto_server.py) keeps DynamoDB consistent under
concurrent transactions: this starts it on a free port, runs 8 threads of
TransactWriteItems against one table (every fourth one cancelled by its
condition) beside a few hundred items, and checks that no call failed
with a 500 and that the table holds exactly what the committed
transactions wrote. Plain moto fails it (500s from copying a table being
written, and rolled-back transactions putting back stale whole-table
copies over other requests' writes).

Run by scripts/test: localstack/.venv/bin/python localstack/test_moto_server.py
"""

import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import botocore.config

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = "moto-consistency"
THREADS, PER_THREAD, BULK = 8, 30, 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"moto_server.py exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("moto_server.py did not listen within 30 s")


def main() -> int:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        return check(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def check(port: int) -> int:
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 0}),
    )
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(BULK):
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": "bulk"}, "sk": {"S": f"{i:05}"}, "d": {"S": "x" * 2000}})
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "taken"}, "sk": {"S": "x"}})
    committed, cancelled, errors = [0], [0], []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(PER_THREAD):
            second = (
                # Cancels the transaction: the item exists.
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "taken"}, "sk": {"S": "x"}},
                         "ConditionExpression": "attribute_not_exists(pk)"}}
                if i % 4 == 3
                else {"Put": {"TableName": TABLE, "Item": {"pk": {"S": f"w{w}-b"}, "sk": {"S": f"{i:05}"}}}}
            )
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": TABLE, "Item": {"pk": {"S": f"w{w}"}, "sk": {"S": f"{i:05}"}},
                                 "ConditionExpression": "attribute_not_exists(pk)"}},
                        second,
                    ]
                )
                with lock:
                    committed[0] += 1
            except ddb.exceptions.TransactionCanceledException:
                with lock:
                    cancelled[0] += 1
            except Exception as e:  # a 500, a reset connection
                with lock:
                    errors.append(repr(e)[:200])

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    items, kwargs = 0, {}
    while True:
        page = ddb.scan(TableName=TABLE, Select="COUNT", **kwargs)
        items += page["Count"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    expected = BULK + 1 + 2 * committed[0]
    print(
        f"moto_server.py: {THREADS * PER_THREAD} transactions in {took:.1f} s: {committed[0]} committed, "
        f"{cancelled[0]} cancelled, {len(errors)} failed; {items} items, {expected} expected"
    )
    problems = []
    if errors:
        problems.append(f"calls failed: {errors[:3]}")
    refused = THREADS * sum(1 for i in range(PER_THREAD) if i % 4 == 3)
    if cancelled[0] != refused:
        problems.append(f"{cancelled[0]} cancelled, {refused} expected")
    if items != expected:
        problems.append(f"the table holds {items} items, {expected} committed")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
