"""The dashboard and alarms of infra/template.yaml name only metrics the code
emits: `"$(infra/tools)/python" infra/test_metrics_drift.py`.

Every metric name in agentwire's own namespace (`agentwire/${AWS::StackName}`,
anything not `AWS/...`) is collected from

- the dashboard bodies (`AWS::CloudWatch::Dashboard`, `DashboardBody` as a
  string or `!Sub`): explicit metric arrays `[namespace, name, dim, value,
  ..., {options}]` (with CloudWatch's "." shorthand for "as the row above"),
  and `MetricName="..."` inside `SEARCH(...)` expressions;
- the alarms (`AWS::CloudWatch::Alarm`): `Namespace`/`MetricName`, and the
  `MetricStat.Metric` of each metric-math `Metrics` entry (and any
  `MetricName="..."` in their expressions);

and each must be a name declared in shared/core/src/metrics.rs (`pub const X:
&str = "...";`) and listed in its `ALL`, the list the code describes and
emits. AWS namespaces (AWS/Lambda, AWS/SQS, AWS/ApiGateway, ...) are not
checked. Exit status 0 when every name is emitted, 1 otherwise (each unknown
name listed with where it appears).
"""
from __future__ import annotations

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEMPLATE = os.path.join(HERE, "template.yaml")
METRICS_RS = os.path.join(ROOT, "shared", "core", "src", "metrics.rs")


class DriftError(Exception):
    """The template or metrics.rs cannot be read as expected."""


# ---------------------------------------------------------------- the code

_CONST = re.compile(r'^\s*pub\s+const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;',
                    re.MULTILINE)
_ALL = re.compile(r"pub\s+const\s+ALL\s*:\s*&\[\s*Metric\s*\]\s*=\s*&\[(.*?)\];", re.DOTALL)


def emitted_names(source: str) -> tuple[set[str], dict[str, str]]:
    """metrics.rs -> (names listed in ALL, {name: const} of consts not in ALL)."""
    consts = dict(_CONST.findall(source))
    if not consts:
        raise DriftError("no `pub const X: &str = \"...\";` metric names found")
    m = _ALL.search(source)
    if not m:
        raise DriftError("no `pub const ALL: &[Metric] = &[...];` found")
    body = re.sub(r"//[^\n]*", "", m.group(1))
    listed: set[str] = set()
    missing: dict[str, str] = {}
    for ident, name in consts.items():
        # ALL names a metric by its constant, or (unusually) by the literal.
        if re.search(rf"\b{re.escape(ident)}\b", body) or f'"{name}"' in body:
            listed.add(name)
        else:
            missing[name] = ident
    return listed, missing


# ---------------------------------------------------------------- the template

def load_template(path: str) -> dict:
    try:
        from cfnlint.decode import cfn_yaml
    except ImportError as e:  # pragma: no cover
        raise DriftError(f"cfn-lint is not installed ({e}); run infra/tools") from e
    with open(path, encoding="utf-8") as fh:
        return cfn_yaml.loads(fh.read(), path)


def _sub_text(value) -> str | None:
    """A plain string, `!Sub "..."` or `!Sub ["...", {...}]` -> the text with
    every `${X}` replaced by `<X>` (`${!X}` is a literal `${X}`)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict) and len(value) == 1 and "Fn::Sub" in value:
        v = value["Fn::Sub"]
        text = v[0] if isinstance(v, list) else v
        if not isinstance(text, str):
            return None
        text = re.sub(r"\$\{(?!!)([^}]+)\}", lambda m: "<" + m.group(1) + ">", text)
        text = text.replace("${!", "${")
    else:
        return None
    return text


def _is_aws_namespace(ns) -> bool:
    return isinstance(ns, str) and ns.startswith("AWS/")


def _namespace_text(ns) -> str:
    """For messages and the AWS/ test: a namespace as written."""
    t = _sub_text(ns)
    return t if t is not None else json.dumps(ns, default=str)


_SEARCH = re.compile(r"SEARCH\(\s*'((?:[^'\\]|\\.)*)'")
_METRIC_NAME_IN_EXPR = re.compile(r'MetricName\s*=\s*"?([A-Za-z0-9_.\-/:]+)"?')
_SCHEMA_NS = re.compile(r'^\s*\{\s*(?:"([^"]*)"|([^,}\s]+))')


def names_in_expression(expr: str) -> list[str]:
    """`MetricName="x"` of each SEARCH (or plain expression) outside AWS/*."""
    out = []
    searches = _SEARCH.findall(expr)
    if searches:
        for query in searches:
            m = _SCHEMA_NS.match(query)
            ns = (m.group(1) or m.group(2)) if m else None
            if ns and ns.startswith("AWS/"):
                continue
            out.extend(_METRIC_NAME_IN_EXPR.findall(query))
    else:
        out.extend(_METRIC_NAME_IN_EXPR.findall(expr))
    return out


def names_in_dashboard(body: dict, where: str) -> list[tuple[str, str]]:
    """(metric name, where) for each agentwire metric a dashboard body names."""
    out = []
    widgets = body.get("widgets")
    if not isinstance(widgets, list):
        raise DriftError(f"{where}: no widgets list")
    for i, w in enumerate(widgets):
        props = (w or {}).get("properties") or {}
        title = props.get("title", f"widget {i}")
        wh = f"{where} widget {title!r}"
        prev: list = []
        for row in props.get("metrics") or []:
            if not isinstance(row, list):
                raise DriftError(f"{wh}: metric row {row!r} is not an array")
            fields = [x for x in row if not isinstance(x, dict)]
            opts = [x for x in row if isinstance(x, dict)]
            for o in opts:
                if "expression" in o:
                    out.extend((n, f"{wh} expression") for n in names_in_expression(o["expression"]))
            if not fields:
                continue
            # "." repeats the value at this position in the row above;
            # "..." repeats the rest of the row above.
            if "..." in fields:
                k = fields.index("...")
                fields = fields[:k] + prev[k:] + fields[k + 1:]
            fields = [prev[j] if f == "." and j < len(prev) else f for j, f in enumerate(fields)]
            prev = fields
            if len(fields) < 2:
                raise DriftError(f"{wh}: metric row {row!r} has no namespace and name")
            ns, name = fields[0], fields[1]
            if _is_aws_namespace(ns):
                continue
            out.append((name, f"{wh} ({ns})"))
    return out


def names_in_alarm(props: dict, where: str) -> list[tuple[str, str]]:
    out = []
    if "MetricName" in props and not _is_aws_namespace(_namespace_text(props.get("Namespace"))):
        out.append((props["MetricName"], f"{where} MetricName ({_namespace_text(props.get('Namespace'))})"))
    for q in props.get("Metrics") or []:
        qid = q.get("Id", "?")
        metric = ((q.get("MetricStat") or {}).get("Metric")) or {}
        if "MetricName" in metric and not _is_aws_namespace(_namespace_text(metric.get("Namespace"))):
            out.append((metric["MetricName"], f"{where} Metrics[{qid}]"))
        if isinstance(q.get("Expression"), str):
            out.extend((n, f"{where} Metrics[{qid}] expression") for n in names_in_expression(q["Expression"]))
    return out


def collect(template: dict) -> list[tuple[str, str]]:
    """(metric name, where) for every agentwire metric the dashboards and
    alarms of `template` name."""
    out = []
    for lid, r in (template.get("Resources") or {}).items():
        if not isinstance(r, dict):
            continue
        props = r.get("Properties") or {}
        if r.get("Type") == "AWS::CloudWatch::Dashboard":
            text = _sub_text(props.get("DashboardBody"))
            if text is None:
                raise DriftError(f"{lid}: DashboardBody is neither a string nor a !Sub")
            try:
                body = json.loads(text)
            except ValueError as e:
                raise DriftError(f"{lid}: DashboardBody is not JSON after substitution: {e}") from e
            out.extend(names_in_dashboard(body, lid))
        elif r.get("Type") == "AWS::CloudWatch::Alarm":
            out.extend(names_in_alarm(props, lid))
    for name, where in out:
        if not isinstance(name, str):
            raise DriftError(f"{where}: metric name {name!r} is not a literal string")
    return out


def check(template: dict, emitted: set[str], unlisted: dict[str, str]) -> list[str]:
    problems = []
    for name, where in collect(template):
        if name in emitted:
            continue
        if name in unlisted:
            problems.append(f"{where}: metric {name!r} is declared ({unlisted[name]}) but not in ALL "
                            "in shared/core/src/metrics.rs")
        else:
            problems.append(f"{where}: metric {name!r} is not emitted by the code "
                            "(not a name in shared/core/src/metrics.rs ALL)")
    return problems


# ---------------------------------------------------------------- self-check

SNIPPET = """
Resources:
  Board:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardBody: !Sub |
        {"widgets": [{"type": "metric", "properties": {"region": "${AWS::Region}", "metrics": [
          ["agentwire/${AWS::StackName}", "frames_posted", "function", "dispatcher"],
          [".", "frames_exploded", ".", "fanout"],
          ["AWS/Lambda", "Errors", "FunctionName", "${Fn}"],
          [{"expression": "SEARCH('{\\"agentwire/${AWS::StackName}\\",function,scope} MetricName=\\"rate_limitted\\"', 'Sum', 60)"}],
          [{"expression": "SEARCH('{AWS/SQS,QueueName} MetricName=\\"NotOurs\\"', 'Maximum', 60)"}]
        ]}}]}
  Old:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: !Sub "agentwire/${AWS::StackName}"
      MetricName: posts_vanished
  Aws:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: AWS/SQS
      MetricName: ApproximateAgeOfOldestMessage
  Math:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - Id: e
          Expression: FILL(a, 0)
        - Id: a
          MetricStat:
            Metric: {Namespace: !Sub "agentwire/${AWS::StackName}", MetricName: webhook_attempt}
"""

RS_SNIPPET = '''
pub const FRAMES_POSTED: &str = "frames_posted";
pub const RATE_LIMITED: &str = "rate_limited";
pub const WEBHOOK_ATTEMPTS: &str = "webhook_attempts";
pub const FORGOTTEN: &str = "posts_vanished";
pub const ALL: &[Metric] = &[
    counter(FRAMES_POSTED, "x"),
    counter(RATE_LIMITED, "y"),
    // counter(FORGOTTEN, "commented out"),
    counter(WEBHOOK_ATTEMPTS, "z"),
];
'''


def self_check() -> None:
    from cfnlint.decode import cfn_yaml
    emitted, unlisted = emitted_names(RS_SNIPPET)
    assert emitted == {"frames_posted", "rate_limited", "webhook_attempts"}, emitted
    assert unlisted == {"posts_vanished": "FORGOTTEN"}, unlisted
    t = cfn_yaml.loads(SNIPPET, "snippet.yaml")
    names = sorted(n for n, _ in collect(t))
    assert names == ["frames_exploded", "frames_posted", "posts_vanished", "rate_limitted", "webhook_attempt"], names
    problems = check(t, emitted, unlisted)
    for bad in ("frames_exploded", "rate_limitted", "webhook_attempt"):
        assert any(f"metric {bad!r} is not emitted" in p for p in problems), (bad, problems)
    assert any("'posts_vanished' is declared (FORGOTTEN) but not in ALL" in p for p in problems), problems
    assert len(problems) == 4, problems
    assert not any("NotOurs" in p or "Errors" in p or "ApproximateAge" in p for p in problems), problems


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", default=TEMPLATE)
    ap.add_argument("--metrics-rs", default=METRICS_RS)
    args = ap.parse_args(argv)
    try:
        self_check()
    except AssertionError:
        import traceback
        traceback.print_exc()
        print("metrics drift: the self-check failed (the extraction misses or invents names)", file=sys.stderr)
        return 1
    try:
        with open(args.metrics_rs, encoding="utf-8") as fh:
            emitted, unlisted = emitted_names(fh.read())
        template = load_template(args.template)
        found = collect(template)
        problems = check(template, emitted, unlisted)
    except (DriftError, OSError) as e:
        print(f"metrics drift: {e}", file=sys.stderr)
        return 1
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print(f"metrics drift: {len(problems)} metric name(s) in infra/template.yaml that the code does not emit",
              file=sys.stderr)
        return 1
    names = {n for n, _ in found}
    if not names:
        print("metrics drift: the template's dashboard and alarms name no agentwire metric", file=sys.stderr)
        return 1
    shown = sorted(emitted - names)
    print(f"metrics drift: {len(names)} metric names in dashboard and alarms, all emitted"
          + (f" (not shown: {', '.join(shown)})" if shown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
