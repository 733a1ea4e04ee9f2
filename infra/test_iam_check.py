"""Self-checks of infra/iam_check.py: `"$(infra/tools)/python" infra/test_iam_check.py`.

Small synthetic templates and recordings; the last check runs the real
template against infra/testdata/iam_recording.jsonl, a recording written
from the code (shared/core/src/adapters, wiring.rs, local/src/poller.rs) of
every call each function can make.
"""
import os
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import iam_check  # noqa: E402
from cfnlint.decode import cfn_yaml  # noqa: E402

PT = iam_check.load_policy_templates()

BASE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  StageName: {Type: String, Default: prod}
Globals:
  Function:
    Environment:
      Variables:
        AGENTWIRE_CONNECTIONS_TABLE: !Ref ConnectionsTable
        AGENTWIRE_CHANNELS_TABLE: !Ref ChannelsTable
        AGENTWIRE_EVENTS_QUEUE_URL: !Ref EventsQueue
Resources:
  ConnectionsTable: {Type: AWS::DynamoDB::Table}
  ChannelsTable: {Type: AWS::DynamoDB::Table}
  EventsQueue: {Type: AWS::SQS::Queue}
"""
OTHERS = ["session", "disconnect", "dispatcher", "webhook", "fanout", "publish", "admin"]


def template(connect_policies: str) -> dict:
    text = BASE + "  ConnectFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n" \
        + "      Policies:\n" + connect_policies
    for name in OTHERS:
        fid = iam_check.FUNCTIONS[name]
        text += f"""  {fid}:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - SQSSendMessagePolicy: {{QueueName: !GetAtt EventsQueue.QueueName}}
"""
    return cfn_yaml.loads(text, "synthetic.yaml")


def calls(*connect_calls):
    out = [iam_check.Call("connect", "dynamodb", a, r) for a, r in connect_calls]
    out += [iam_check.Call(n, "sqs", "SendMessage", "events_queue") for n in OTHERS]
    return out


PUT_ONLY = """        - Statement:
            - Effect: Allow
              Action: dynamodb:PutItem
              Resource: !GetAtt ConnectionsTable.Arn
"""


def test_exact_grant_passes():
    rep = iam_check.check(template(PUT_ONLY), calls(("PutItem", "connections")), PT, {})
    assert rep.ok, rep.problems
    assert not rep.warnings, rep.warnings


def test_missing_grant_is_caught():
    rep = iam_check.check(template(PUT_ONLY),
                          calls(("PutItem", "connections"), ("UpdateItem", "connections")), PT, {})
    assert "connect: dynamodb:UpdateItem on ConnectionsTable is used but not granted" in rep.problems, rep.problems


def test_read_policy_does_not_grant_writes():
    pol = "        - DynamoDBReadPolicy: {TableName: !Ref ConnectionsTable}\n"
    rep = iam_check.check(template(pol), calls(("GetItem", "connections"), ("UpdateItem", "connections")), PT, {})
    assert rep.problems == ["connect: dynamodb:UpdateItem on ConnectionsTable is used but not granted"], rep.problems
    assert any("dynamodb:Scan" in w for w in rep.warnings), rep.warnings


def test_wildcard_resource_is_caught():
    pol = """        - Statement:
            - Effect: Allow
              Action: dynamodb:PutItem
              Resource: "*"
"""
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, {})
    assert any("bare *" in p for p in rep.problems), rep.problems


def test_wildcard_action_is_caught():
    pol = """        - Statement:
            - Effect: Allow
              Action: dynamodb:*
              Resource: !GetAtt ConnectionsTable.Arn
"""
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, {})
    assert any("wildcard action dynamodb:*" in p for p in rep.problems), rep.problems


def test_wildcard_table_arn_is_caught():
    pol = """        - Statement:
            - Effect: Allow
              Action: dynamodb:PutItem
              Resource: !Sub "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"
"""
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, {})
    assert any("names no single" in p for p in rep.problems), rep.problems


def test_action_wildcard_pattern_matches():
    pol = """        - Statement:
            - Effect: Allow
              Action: dynamodb:Put*
              Resource: !Sub "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${ConnectionsTable}"
"""
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, {})
    assert rep.ok, rep.problems


def test_untouched_table_is_caught():
    pol = PUT_ONLY + "        - DynamoDBReadPolicy: {TableName: !Ref ChannelsTable}\n"
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, {})
    assert any("on ChannelsTable, which it never touched" in p for p in rep.problems), rep.problems


def test_allowlist_excuses_an_unused_grant():
    pol = PUT_ONLY + "        - DynamoDBReadPolicy: {TableName: !Ref ChannelsTable}\n"
    allow = {("connect", a, "ChannelsTable"): "test"
             for a in ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem",
                       "dynamodb:DescribeTable"]}
    rep = iam_check.check(template(pol), calls(("PutItem", "connections")), PT, allow)
    assert rep.ok, rep.problems


def test_function_missing_from_recording_is_caught():
    rep = iam_check.check(template(PUT_ONLY), calls(("PutItem", "connections"))[:-1] + [
        iam_check.Call("connect", "dynamodb", "PutItem", "connections")], PT, {})
    assert "admin: no recorded call (the suite never invoked it, or the recording is incomplete)" in rep.problems


def test_sam_event_source_policy_is_a_wildcard():
    t = template(PUT_ONLY)
    t["Resources"]["DispatcherFunction"]["Properties"]["Events"] = {
        "E": {"Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["EventsQueue", "Arn"]}}}}
    rep = iam_check.check(t, calls(("PutItem", "connections")), PT, {})
    assert any("AWSLambdaSQSQueueExecutionRole" in p and "bare *" in p for p in rep.problems), rep.problems


def test_empty_or_missing_recording_exits_2():
    with tempfile.TemporaryDirectory() as d:
        assert iam_check.main([d]) == 2
        open(os.path.join(d, "a.jsonl"), "w").close()
        assert iam_check.main([d]) == 2
        assert iam_check.main([os.path.join(d, "nope")]) == 2


def test_real_template_passes_the_code_recording():
    t = iam_check.load_template(iam_check.DEFAULT_TEMPLATE)
    rec = iam_check.load_recording(os.path.join(HERE, "testdata"))
    rep = iam_check.check(t, rec, PT)
    assert rep.ok, "\n".join(rep.problems)
    assert not rep.warnings, rep.warnings
    assert {r[0] for r in rep.rows} == set(iam_check.FUNCTIONS)
    # And the recording is checked, not waved through: drop a grant.
    rep = iam_check.check(t, rec + [iam_check.Call("connect", "dynamodb", "DeleteItem", "connections")], PT)
    assert rep.problems == ["connect: dynamodb:DeleteItem on ConnectionsTable is used but not granted"], rep.problems


# The functions that verify tokens: $connect, the session's in-band
# refresh, the HTTP API and the management API.
VERIFIERS = ("connect", "session", "publish", "admin")


def test_jwt_key_only_on_the_functions_that_verify_tokens():
    t = iam_check.load_template(iam_check.DEFAULT_TEMPLATE)
    assert "AGENTWIRE_JWT_SECRET" not in t["Globals"]["Function"]["Environment"]["Variables"]
    assert "AGENTWIRE_JWT_SECRET_ID" not in t["Globals"]["Function"]["Environment"]["Variables"]
    for name, fid in iam_check.FUNCTIONS.items():
        env = ((t["Resources"][fid]["Properties"].get("Environment") or {}).get("Variables")) or {}
        assert "AGENTWIRE_JWT_SECRET" not in env, f"{name}: keys come from Secrets Manager, never the environment"
        assert ("AGENTWIRE_JWT_SECRET_ID" in env) == (name in VERIFIERS), name
        assert ("AGENTWIRE_JWT_KEY_VERSION" in env) == (name in VERIFIERS), name


def main() -> int:
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, f in tests:
        try:
            f()
            passed += 1
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
