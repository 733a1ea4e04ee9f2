"""Checks the functions' IAM grants in infra/template.yaml against the AWS
calls the end-to-end suite recorded.

    "$(infra/tools)/python" infra/iam_check.py RECORDING_DIR [--template PATH]

RECORDING_DIR holds one or more *.jsonl files (all are read), one call a line:

    {"function": "session", "service": "dynamodb", "action": "UpdateItem", "resource": "connections"}

Each function's grants are expanded from the template: SAM policy templates
(with aws-sam-translator's published definitions, policy_templates.json),
inline Statement blocks, an explicit Role's inline policies, and the managed
policy SAM attaches for an SQS or DynamoDB event source. Resources are
resolved symbolically to template logical ids. Then, per function:

- every recorded call must be granted (Allow, action matched with IAM
  wildcards, resource on the same logical id);
- no grant may name a bare "*" resource or a service-wide action
  ("dynamodb:*", "sqs:*");
- no function may be granted a table, queue or API it never touched;
- granted actions never used on a touched resource are warnings, unless
  ALLOWED_UNUSED below gives the reason they are kept;
- every function must appear in the recording.

Exit status: 0 all granted and tight, 1 problems (each listed), 2 no
recording (directory missing or without *.jsonl lines).

moto, the local endpoint, enforces no IAM: without this check a missing or
over-broad grant shows up only once deployed.
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEMPLATE = os.path.join(HERE, "template.yaml")

# Recording name -> template logical id of the function.
FUNCTIONS = {
    "connect": "ConnectFunction",
    "session": "SessionFunction",
    "disconnect": "DisconnectFunction",
    "dispatcher": "DispatcherFunction",
    "webhook": "WebhookFunction",
    "fanout": "FanoutFunction",
    "publish": "PublishFunction",
    "admin": "AdminFunction",
}

# Recording resource role -> the environment variable that names it (its
# value in the template, `!Ref X` or `!Sub "...${X}..."`, gives the logical id).
ROLE_ENV = {
    "connections": "AGENTWIRE_CONNECTIONS_TABLE",
    "subscriptions": "AGENTWIRE_SUBSCRIPTIONS_TABLE",
    "channels": "AGENTWIRE_CHANNELS_TABLE",
    "events": "AGENTWIRE_EVENTS_TABLE",
    "cursors": "AGENTWIRE_CURSORS_TABLE",
    "limits": "AGENTWIRE_LIMITS_TABLE",
    "events_queue": "AGENTWIRE_EVENTS_QUEUE_URL",
    "events_dlq": "AGENTWIRE_EVENTS_DLQ_URL",
    "webhook_queue": "AGENTWIRE_WEBHOOK_QUEUE_URL",
    "webhook_dlq": "AGENTWIRE_WEBHOOK_DLQ_URL",
    "fanout_queue": "AGENTWIRE_FANOUT_QUEUE_URL",
    "connections_api": "AGENTWIRE_CONNECTIONS_ENDPOINT",
    "jwt_secret": "AGENTWIRE_JWT_SECRET_ID",
}

# The services the recording covers, and the resource type each acts on.
SERVICE_TYPES = {
    "dynamodb": "AWS::DynamoDB::Table",
    "sqs": "AWS::SQS::Queue",
    "execute-api": "AWS::ApiGatewayV2::Api",
    "secretsmanager": "AWS::SecretsManager::Secret",
}

# Resource types whose `Ref` is their ARN.
REF_IS_ARN = ("AWS::SecretsManager::Secret",)

# SQS batch APIs are authorised by the single-message action.
ACTION_ALIASES = {
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}

# Managed policies a role may carry: they grant nothing in the services above.
HARMLESS_MANAGED = ("AWSLambdaBasicExecutionRole",)

# What SAM attaches to a generated role for an event source (samtranslator
# model/eventsources/pull.py): managed policies with Resource "*".
EVENT_SOURCE_MANAGED = {
    "SQS": ("AWSLambdaSQSQueueExecutionRole",
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]),
    "DynamoDB": ("AWSLambdaDynamoDBExecutionRole",
                 ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                  "dynamodb:ListStreams"]),
}

# Grants the code needs on paths the end-to-end suite may not reach:
# (function, action, logical id) -> why it is kept. An entry that the
# recording does use is reported as a note (it can go).
ALLOWED_UNUSED = {
    **{(f, "secretsmanager:GetSecretValue", "JwtSecret"):
       "read once at cold start (Deps::from_env), before any invocation the dev gateway records; "
       "the e2e test secrets::the_token_keys_come_from_secrets_manager reads it on the local endpoint"
       for f in ("connect", "session", "publish", "admin")},
    ("dispatcher", "sqs:GetQueueAttributes", "EventsQueue"):
        "the event source mapping needs it; the dev gateway's poller calls it once, at start-up",
    ("webhook", "sqs:GetQueueAttributes", "WebhookQueue"):
        "the event source mapping needs it; the dev gateway's poller calls it once, at start-up",
    ("fanout", "sqs:GetQueueAttributes", "FanoutQueue"):
        "the event source mapping needs it; the dev gateway's poller calls it once, at start-up",
    ("fanout", "dynamodb:GetItem", "ConnectionsTable"):
        "a gone connection met by a fan-out job (remove_connection)",
    ("fanout", "dynamodb:DeleteItem", "ConnectionsTable"):
        "a gone connection met by a fan-out job (remove_connection)",
    ("fanout", "dynamodb:UpdateItem", "ConnectionsTable"):
        "a subscriber of a big channel whose token expired leaves it",
    ("fanout", "dynamodb:GetItem", "SubscriptionsTable"):
        "the membership version of a job enqueued without one (by a release before jobs carried it)",
    ("fanout", "dynamodb:DeleteItem", "SubscriptionsTable"):
        "a gone connection met by a fan-out job (its subscriptions)",
    ("fanout", "dynamodb:UpdateItem", "SubscriptionsTable"):
        "a gone connection met by a fan-out job (one fewer present)",
    ("dispatcher", "dynamodb:GetItem", "EventsTable"):
        "find_by_id: only when a redelivered event id already has a seq",
    ("webhook", "dynamodb:UpdateItem", "ChannelsTable"):
        "disabling a webhook after 410 Gone (WebhookAdmin::disable)",
    ("publish", "dynamodb:UpdateItem", "ConnectionsTable"):
        "a subscriber whose token expired leaves the channel, or a gone one is counted out of the open "
        "connections, when an HTTP publish's delivery meets it (the e2e tests meet both through the "
        "dispatcher's delivery, the same code)",
    ("publish", "dynamodb:UpdateItem", "SubscriptionsTable"):
        "the presence count set to the live subscriptions a listing read, when it had drifted "
        "(delivery's listing, the same code as the dispatcher's)",
}


class CheckError(Exception):
    """The template or recording cannot be read."""


# ---------------------------------------------------------------- loading

def load_template(path: str) -> dict:
    try:
        from cfnlint.decode import cfn_yaml
    except ImportError as e:  # pragma: no cover
        raise CheckError(f"cfn-lint is not installed ({e}); run infra/tools") from e
    with open(path, encoding="utf-8") as fh:
        return cfn_yaml.loads(fh.read(), path)


def load_policy_templates() -> dict:
    try:
        import samtranslator
    except ImportError as e:
        raise CheckError(
            "aws-sam-translator is not installed: "
            '"$(infra/tools)/pip" install -r infra/requirements.txt') from e
    path = os.path.join(os.path.dirname(samtranslator.__file__),
                        "policy_templates_data", "policy_templates.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["Templates"]


@dataclass(frozen=True)
class Call:
    function: str
    service: str
    action: str
    resource: str


def load_recording(directory: str) -> list[Call]:
    """Raises FileNotFoundError when there is nothing to read."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"recording directory {directory!r} does not exist")
    files = sorted(glob.glob(os.path.join(directory, "*.jsonl")))
    calls = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    calls.append(Call(d["function"], d["service"], d["action"], d["resource"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise CheckError(f"{path}:{n}: not a call record ({e}): {line.strip()[:200]}")
    if not calls:
        raise FileNotFoundError(
            f"no recorded calls in {directory!r} ({len(files)} *.jsonl file(s), all empty)"
            if files else f"no *.jsonl files in {directory!r}")
    return calls


# ---------------------------------------------------------------- resolving

def _pseudo_or_param(name: str, template: dict) -> bool:
    return name.startswith("AWS::") or name in (template.get("Parameters") or {})


def _resource_type(template: dict, logical_id: str) -> str | None:
    r = (template.get("Resources") or {}).get(logical_id)
    return r.get("Type") if isinstance(r, dict) else None


def _sub_parts(value) -> tuple[str, dict]:
    if isinstance(value, list):
        return value[0], dict(value[1]) if len(value) > 1 else {}
    return value, {}


def _logical_of(value, template: dict) -> str | None:
    """`!Ref X`, `!GetAtt X.Attr` or a `!Sub` naming one resource -> X."""
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Ref" and isinstance(v, str) and not _pseudo_or_param(v, template):
            return v
        if k == "Fn::GetAtt":
            target = v[0] if isinstance(v, list) else str(v).split(".")[0]
            return target
        if k == "Fn::Sub":
            text, _ = _sub_parts(v)
            names = {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            names = {n for n in names if not _pseudo_or_param(n, template)}
            if len(names) == 1:
                return names.pop()
    return None


def role_map(template: dict, function_id: str) -> dict[str, str]:
    """Recording role -> logical id, from the function's environment (its own
    variables override Globals)."""
    env = dict(((((template.get("Globals") or {}).get("Function") or {})
                 .get("Environment") or {}).get("Variables") or {}))
    fn = template["Resources"][function_id].get("Properties") or {}
    env.update(((fn.get("Environment") or {}).get("Variables")) or {})
    out = {}
    for role, var in ROLE_ENV.items():
        if var in env:
            lid = _logical_of(env[var], template)
            if lid:
                out[role] = lid
    return out


@dataclass
class Grant:
    action: str            # as written, e.g. "dynamodb:Get*"
    resource: str | None   # logical id, None for a wildcard or unresolved resource
    source: str            # where it came from, for messages
    raw_resource: str = ""
    used: bool = False


@dataclass
class FunctionPolicy:
    name: str
    grants: list[Grant] = field(default_factory=list)
    denies: list[Grant] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _subst_params(node, params: dict):
    """Replaces `{"Ref": P}` of a policy template parameter with its value."""
    if isinstance(node, dict):
        if len(node) == 1 and "Ref" in node and node["Ref"] in params:
            return params[node["Ref"]]
        return {k: _subst_params(v, params) for k, v in node.items()}
    if isinstance(node, list):
        return [_subst_params(v, params) for v in node]
    return node


_ARN_SHAPES = {
    # After each ${...} of a template resource is replaced by <ID>, and each
    # pseudo parameter or parameter by <P>.
    "dynamodb": re.compile(r"^arn:<P>:dynamodb:<P>:<P>:table/<ID>(/index/\*)?$"),
    "sqs": re.compile(r"^arn:<P>:sqs:<P>:<P>:<ID>$"),
    "execute-api": re.compile(
        r"^arn:<P>:execute-api:<P>:<P>:<ID>/(<P>|[A-Za-z0-9_-]+)/(POST|GET|DELETE)/@connections/\*$"),
}


def resolve_resource(value, template: dict, service: str) -> tuple[str | None, str]:
    """A statement resource -> (logical id or None, printable form)."""
    if isinstance(value, str):
        return None, value
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Fn::GetAtt":
            target, attr = (v[0], v[1]) if isinstance(v, list) else str(v).split(".", 1)
            if attr == "Arn":
                return target, f"!GetAtt {target}.{attr}"
            return None, f"!GetAtt {target}.{attr} (not an ARN)"
        if k == "Ref":
            # A secret's Ref is its ARN (a table's or a queue's is not).
            kind = ((template.get("Resources") or {}).get(v) or {}).get("Type")
            if kind in REF_IS_ARN:
                return v, f"!Ref {v}"
            return None, f"!Ref {v} (not an ARN)"
        if k == "Fn::Sub":
            text, variables = _sub_parts(v)
            ids = set()

            def repl(m):
                name = m.group(1)
                if name in variables:
                    lid = _logical_of(variables[name], template)
                    if lid is None:
                        return "<?>"
                    ids.add(lid)
                    return "<ID>"
                base = name.split(".")[0]
                if _pseudo_or_param(base, template):
                    return "<P>"
                ids.add(base)
                return "<ID>"

            shape = re.sub(r"\$\{([^}!]+)\}", repl, text)
            printable = text if not variables else f"{text} with {json.dumps(variables, default=str)}"
            shape_re = _ARN_SHAPES.get(service)
            if len(ids) == 1 and shape_re and shape_re.match(shape):
                return ids.pop(), printable
            return None, printable
    return None, json.dumps(value, default=str)


def _statements_of(doc) -> list:
    if isinstance(doc, dict):
        st = doc.get("Statement", [])
        return st if isinstance(st, list) else [st]
    return []


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _add_statements(fp: FunctionPolicy, statements, template: dict, source: str) -> None:
    for st in statements:
        if not isinstance(st, dict):
            fp.problems.append(f"{fp.name}: {source}: a statement is not a mapping")
            continue
        if "NotAction" in st or "NotResource" in st:
            fp.problems.append(f"{fp.name}: {source}: NotAction/NotResource grants too much")
            continue
        effect = st.get("Effect", "Allow")
        for action in _as_list(st.get("Action", [])):
            if not isinstance(action, str):
                fp.problems.append(f"{fp.name}: {source}: action {action!r} is not a string")
                continue
            service = action.split(":", 1)[0].lower() if ":" in action else "*"
            if effect == "Allow" and (action == "*" or service in SERVICE_TYPES and action.split(":", 1)[1] == "*"):
                fp.problems.append(f"{fp.name}: {source}: wildcard action {action}")
                continue
            if service == "logs" or service not in SERVICE_TYPES:
                if effect == "Allow" and service != "logs":
                    fp.problems.append(
                        f"{fp.name}: {source}: grants {action}, a service the recording does not cover")
                continue
            for res in _as_list(st.get("Resource", [])):
                lid, printable = resolve_resource(res, template, service)
                g = Grant(action, lid, source, printable)
                if effect != "Allow":
                    fp.denies.append(g)
                    continue
                if lid is None:
                    what = "a bare *" if printable == "*" else f"{printable!r}, which names no single {SERVICE_TYPES[service]}"
                    fp.problems.append(f"{fp.name}: {source}: {action} on {what}")
                    continue
                ty = _resource_type(template, lid)
                if ty != SERVICE_TYPES[service]:
                    fp.problems.append(
                        f"{fp.name}: {source}: {action} on {lid}, which is {ty or 'not a template resource'}, "
                        f"not {SERVICE_TYPES[service]}")
                    continue
                fp.grants.append(g)


def _managed_name(arn) -> str:
    if isinstance(arn, dict) and "Fn::Sub" in arn:
        arn, _ = _sub_parts(arn["Fn::Sub"])
    return str(arn).rsplit("/", 1)[-1]


def expand_function(template: dict, name: str, policy_templates: dict) -> FunctionPolicy:
    fid = FUNCTIONS[name]
    fp = FunctionPolicy(name)
    res = template.get("Resources") or {}
    if fid not in res:
        fp.problems.append(f"{name}: the template has no {fid}")
        return fp
    props = res[fid].get("Properties") or {}
    role = props.get("Role")
    if role is not None:
        role_id = _logical_of(role, template)
        role_res = res.get(role_id) if role_id else None
        if not role_res or role_res.get("Type") != "AWS::IAM::Role":
            fp.problems.append(f"{name}: Role {json.dumps(role, default=str)} is not a role of this template")
            return fp
        if props.get("Policies"):
            fp.problems.append(f"{name}: both Role and Policies (SAM ignores Policies)")
        rprops = role_res.get("Properties") or {}
        for arn in rprops.get("ManagedPolicyArns") or []:
            if _managed_name(arn) not in HARMLESS_MANAGED:
                fp.problems.append(f"{name}: managed policy {_managed_name(arn)} on {role_id} cannot be checked")
        for pol in rprops.get("Policies") or []:
            _add_statements(fp, _statements_of(pol.get("PolicyDocument")), template,
                            f"{role_id}/{pol.get('PolicyName', '?')}")
        for lid, r in res.items():
            if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                roles = [_logical_of(x, template) for x in (r.get("Properties") or {}).get("Roles") or []]
                if role_id in roles:
                    _add_statements(fp, _statements_of(r["Properties"].get("PolicyDocument")),
                                    template, lid)
        return fp
    for i, pol in enumerate(props.get("Policies") or []):
        src = f"{fid}.Policies[{i}]"
        if isinstance(pol, str) or (isinstance(pol, dict) and "Fn::Sub" in pol):
            if _managed_name(pol) not in HARMLESS_MANAGED:
                fp.problems.append(f"{name}: {src}: managed policy {_managed_name(pol)} cannot be checked")
            continue
        if not isinstance(pol, dict):
            fp.problems.append(f"{name}: {src}: unreadable policy")
            continue
        if "Statement" in pol:
            _add_statements(fp, _statements_of(pol), template, src)
            continue
        if len(pol) != 1:
            fp.problems.append(f"{name}: {src}: unreadable policy {json.dumps(pol, default=str)}")
            continue
        (tname, params), = pol.items()
        if tname not in policy_templates:
            fp.problems.append(f"{name}: {src}: {tname} is not a SAM policy template")
            continue
        definition = _subst_params(policy_templates[tname]["Definition"], dict(params or {}))
        _add_statements(fp, _statements_of(definition), template, f"{src} {tname}")
    # What SAM adds to the role it generates for an event source.
    for ev_name, ev in (props.get("Events") or {}).items():
        kind = (ev or {}).get("Type")
        if kind in EVENT_SOURCE_MANAGED:
            managed, actions = EVENT_SOURCE_MANAGED[kind]
            _add_statements(fp, [{"Effect": "Allow", "Action": actions, "Resource": "*"}], template,
                            f"{fid} event {ev_name}: SAM attaches {managed} (give the function its own Role)")
    return fp


# ---------------------------------------------------------------- checking

def _matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[tuple[str, int, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(template: dict, calls: list[Call], policy_templates: dict,
          allowed_unused: dict | None = None) -> Report:
    allowed = ALLOWED_UNUSED if allowed_unused is None else allowed_unused
    rep = Report()
    by_fn: dict[str, list[Call]] = {}
    for c in calls:
        if c.function not in FUNCTIONS:
            rep.problems.append(f"recording names an unknown function {c.function!r}")
            continue
        by_fn.setdefault(c.function, []).append(c)
    for name in FUNCTIONS:
        fp = expand_function(template, name, policy_templates)
        problems = list(fp.problems)
        roles = role_map(template, FUNCTIONS[name]) if FUNCTIONS[name] in (template.get("Resources") or {}) else {}
        fn_calls = by_fn.get(name, [])
        if not fn_calls:
            problems.append(f"{name}: no recorded call (the suite never invoked it, or the recording is incomplete)")
        touched: set[str] = set()
        missing: set[str] = set()
        for c in sorted(set(fn_calls), key=lambda c: (c.service, c.resource, c.action)):
            if c.service not in SERVICE_TYPES:
                problems.append(f"{name}: unknown service {c.service!r} in the recording")
                continue
            lid = roles.get(c.resource)
            if lid is None:
                problems.append(f"{name}: resource {c.resource!r} maps to no template resource "
                                f"(no {ROLE_ENV.get(c.resource, 'known variable')} in its environment)")
                continue
            touched.add(lid)
            action = f"{c.service}:{ACTION_ALIASES.get((c.service, c.action), c.action)}"
            hits = [g for g in fp.grants if g.resource == lid and _matches(g.action, action)]
            denied = any(d.resource in (lid, None) and _matches(d.action, action) for d in fp.denies)
            for g in hits:
                g.used = True
            if not hits or denied:
                msg = f"{name}: {action} on {lid} is used but not granted"
                if msg not in missing:
                    missing.add(msg)
                    problems.append(msg)
        seen: set[tuple] = set()
        for g in fp.grants:
            key = (name, g.action, g.resource)
            # A table and its /index/* resource are one grant here.
            used = any(h.used for h in fp.grants if (name, h.action, h.resource) == key)
            if key in seen:
                continue
            seen.add(key)
            if used:
                if key in allowed:
                    rep.notes.append(f"{name}: {g.action} on {g.resource} is allowlisted but was used; "
                                     "the ALLOWED_UNUSED entry can go")
                continue
            if key in allowed:
                rep.notes.append(f"{name}: {g.action} on {g.resource} unused, kept: {allowed[key]}")
                continue
            if g.resource not in touched:
                problems.append(f"{name}: granted {g.action} on {g.resource}, which it never touched ({g.source})")
            else:
                rep.warnings.append(f"{name}: granted {g.action} on {g.resource} but never used it ({g.source})")
        rep.problems.extend(problems)
        rep.rows.append((name, len(fn_calls), len(fp.grants), "ok" if not problems else f"{len(problems)} problem(s)"))
    return rep


def render(rep: Report) -> str:
    lines = [f"{'function':<12} {'calls':>7} {'grants':>7}  result"]
    for name, n, g, res in rep.rows:
        lines.append(f"{name:<12} {n:>7} {g:>7}  {res}")
    for title, items in (("problems", rep.problems), ("warnings", rep.warnings), ("notes", rep.notes)):
        if items:
            lines.append(f"\n{title}:")
            lines.extend(f"  {x}" for x in items)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recording", help="directory of *.jsonl call records")
    ap.add_argument("--template", default=DEFAULT_TEMPLATE)
    args = ap.parse_args(argv)
    try:
        calls = load_recording(args.recording)
    except FileNotFoundError as e:
        print(f"iam_check: {e}: run the end-to-end suite with call recording first", file=sys.stderr)
        return 2
    try:
        template = load_template(args.template)
        rep = check(template, calls, load_policy_templates())
    except CheckError as e:
        print(f"iam_check: {e}", file=sys.stderr)
        return 1
    print(render(rep))
    if not rep.ok:
        print(f"\niam_check: {len(rep.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"\niam_check: every recorded call is granted; no function is granted what it does not use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
