"""Create agentwire's DynamoDB tables and SQS queues on a local AWS endpoint.

Idempotent: existing tables and queues are kept (their attributes are brought
in line). The definitions come from resources.json beside this file, the same
file the end-to-end tests read.
"""
import argparse
import json
import os
import sys

import boto3
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))


def create_table(ddb, spec):
    name = spec["name"]
    keys = [{"AttributeName": spec["hash_key"], "KeyType": "HASH"}]
    attrs = [{"AttributeName": spec["hash_key"], "AttributeType": spec["hash_type"]}]
    if "range_key" in spec:
        keys.append({"AttributeName": spec["range_key"], "KeyType": "RANGE"})
        attrs.append({"AttributeName": spec["range_key"], "AttributeType": spec["range_type"]})
    try:
        ddb.describe_table(TableName=name)
        state = "exists"
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        ddb.create_table(
            TableName=name,
            KeySchema=keys,
            AttributeDefinitions=attrs,
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        state = "created"
    if spec.get("ttl_attribute"):
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]},
        )
    print(f"  table {name}: {state}")


def create_queue(sqs, spec, urls):
    name = spec["name"]
    attrs = {
        "VisibilityTimeout": str(spec["visibility_timeout_s"]),
        "MessageRetentionPeriod": str(spec["retention_s"]),
    }
    if spec.get("fifo"):
        attrs["FifoQueue"] = "true"
        # High-throughput FIFO: deduplication per message group (channel).
        if spec.get("deduplication_scope"):
            attrs["DeduplicationScope"] = spec["deduplication_scope"]
        if spec.get("fifo_throughput_limit"):
            attrs["FifoThroughputLimit"] = spec["fifo_throughput_limit"]
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    dl = spec.get("dead_letter")
    if dl:
        dlq_arn = sqs.get_queue_attributes(QueueUrl=urls[dl["queue"]], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(dl["max_receive_count"])})
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": policy})
    urls[name] = url
    print(f"  queue {name}: {url}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = parser.parse_args()
    with open(os.path.join(HERE, "resources.json"), encoding="utf-8") as fh:
        resources = json.load(fh)
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=args.region,
    )
    ddb = session.client("dynamodb", endpoint_url=args.endpoint)
    sqs = session.client("sqs", endpoint_url=args.endpoint)
    print(f"creating agentwire resources on {args.endpoint}")
    for table in resources["tables"]:
        create_table(ddb, table)
    urls = {}
    for queue in resources["queues"]:
        create_queue(sqs, queue, urls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
