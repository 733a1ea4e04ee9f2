//! One source of truth: the tables and queues `localstack/up` creates
//! (`localstack/resources.json`) must be the ones `infra/template.yaml`
//! deploys, and the template must hold together (every function binary
//! exists, every SQS-triggered function fits in its queue's visibility
//! timeout, every WebSocket route is there). Reads files only; no endpoint.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn resources() -> Json {
    let text = std::fs::read_to_string(root().join("localstack/resources.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn template() -> Yaml {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The template resource each local table or queue must match.
fn logical_id(local_name: &str) -> &'static str {
    match local_name {
        "agentwire-connections" => "ConnectionsTable",
        "agentwire-subscriptions" => "SubscriptionsTable",
        "agentwire-channels" => "ChannelsTable",
        "agentwire-events" => "EventsTable",
        "agentwire-cursors" => "CursorsTable",
        "agentwire-limits" => "LimitsTable",
        "agentwire-events.fifo" => "EventsQueue",
        "agentwire-events-dlq.fifo" => "EventsDeadLetterQueue",
        "agentwire-webhooks" => "WebhookQueue",
        "agentwire-webhooks-dlq" => "WebhookDeadLetterQueue",
        "agentwire-fanout" => "FanoutQueue",
        "agentwire-fanout-dlq" => "FanoutDeadLetterQueue",
        other => panic!("resources.json has {other:?}, which the template does not map"),
    }
}

fn resource<'a>(t: &'a Yaml, id: &str) -> &'a Yaml {
    let r = &t["Resources"][id];
    assert!(!r.is_null(), "infra/template.yaml has no resource {id}");
    r
}

fn of_type(t: &Yaml, ty: &str) -> BTreeSet<String> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .map(|(k, _)| k.as_str().unwrap().to_owned())
        .collect()
}

/// `!GetAtt X.Arn` → `X`.
fn get_att_target(v: &Yaml) -> String {
    match v {
        Yaml::Tagged(t) if t.tag == "GetAtt" => t
            .value
            .as_str()
            .unwrap()
            .trim_end_matches(".Arn")
            .to_owned(),
        other => panic!("expected !GetAtt X.Arn, got {other:?}"),
    }
}

fn num(v: &Yaml) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("expected a number, got {v:?}"))
}

#[test]
fn tables_match_the_local_definitions() {
    let (local, t) = (resources(), template());
    let tables = local["tables"].as_array().unwrap();
    let mut seen = BTreeSet::new();
    for table in tables {
        let name = table["name"].as_str().unwrap();
        let id = logical_id(name);
        seen.insert(id.to_owned());
        let p = &resource(&t, id)["Properties"];
        assert_eq!(
            p["BillingMode"].as_str(),
            Some("PAY_PER_REQUEST"),
            "{id}: on-demand"
        );
        let key = |kind: &str| {
            p["KeySchema"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|k| k["KeyType"].as_str() == Some(kind))
                .map(|k| k["AttributeName"].as_str().unwrap().to_owned())
        };
        let attr_type = |attr: &str| {
            p["AttributeDefinitions"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|a| a["AttributeName"].as_str() == Some(attr))
                .map(|a| a["AttributeType"].as_str().unwrap().to_owned())
        };
        let hash = key("HASH").unwrap_or_else(|| panic!("{id}: no hash key"));
        assert_eq!(
            Some(hash.as_str()),
            table["hash_key"].as_str(),
            "{id}: hash key"
        );
        assert_eq!(
            attr_type(&hash).as_deref(),
            table["hash_type"].as_str(),
            "{id}: hash type"
        );
        let range = key("RANGE");
        assert_eq!(
            range.as_deref(),
            table["range_key"].as_str(),
            "{id}: range key"
        );
        if let Some(r) = &range {
            assert_eq!(
                attr_type(r).as_deref(),
                table["range_type"].as_str(),
                "{id}: range type"
            );
        }
        let ttl = &p["TimeToLiveSpecification"];
        match table["ttl_attribute"].as_str() {
            Some(attr) => {
                assert_eq!(
                    ttl["AttributeName"].as_str(),
                    Some(attr),
                    "{id}: TTL attribute"
                );
                assert_eq!(ttl["Enabled"].as_bool(), Some(true), "{id}: TTL enabled");
            }
            None => assert!(ttl.is_null(), "{id}: TTL in the template only"),
        }
    }
    assert_eq!(
        seen,
        of_type(&t, "AWS::DynamoDB::Table"),
        "the same set of tables"
    );
    let pitr = &resource(&t, "EventsTable")["Properties"]["PointInTimeRecoverySpecification"];
    assert_eq!(pitr["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
}

#[test]
fn queues_match_the_local_definitions() {
    let (local, t) = (resources(), template());
    let mut seen = BTreeSet::new();
    for q in local["queues"].as_array().unwrap() {
        let name = q["name"].as_str().unwrap();
        let id = logical_id(name);
        seen.insert(id.to_owned());
        let p = &resource(&t, id)["Properties"];
        let fifo = p["FifoQueue"].as_bool().unwrap_or(false);
        assert_eq!(Some(fifo), q["fifo"].as_bool(), "{id}: FIFO");
        assert_eq!(
            num(&p["VisibilityTimeout"]),
            q["visibility_timeout_s"].as_u64().unwrap(),
            "{id}: visibility"
        );
        assert_eq!(
            num(&p["MessageRetentionPeriod"]),
            q["retention_s"].as_u64().unwrap(),
            "{id}: retention"
        );
        for (local_key, template_key) in [
            ("deduplication_scope", "DeduplicationScope"),
            ("fifo_throughput_limit", "FifoThroughputLimit"),
        ] {
            assert_eq!(
                p[template_key].as_str(),
                q[local_key].as_str(),
                "{id}: {template_key}"
            );
        }
        let redrive = &p["RedrivePolicy"];
        match q.get("dead_letter") {
            Some(dl) => {
                let target = get_att_target(&redrive["deadLetterTargetArn"]);
                assert_eq!(
                    target,
                    logical_id(dl["queue"].as_str().unwrap()),
                    "{id}: DLQ"
                );
                assert_eq!(
                    num(&redrive["maxReceiveCount"]),
                    dl["max_receive_count"].as_u64().unwrap(),
                    "{id}: max receives"
                );
            }
            None => assert!(redrive.is_null(), "{id}: redrive in the template only"),
        }
    }
    assert_eq!(
        seen,
        of_type(&t, "AWS::SQS::Queue"),
        "the same set of queues"
    );
}

#[test]
fn functions_build_from_this_workspace_and_fit_their_queues() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 9, "{functions:?}");
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    for id in &functions {
        let f = resource(&t, id);
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{id}"
        );
        let bin = f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
        let manifest = std::fs::read_to_string(root().join(format!("functions/{bin}/Cargo.toml")))
            .unwrap_or_else(|_| panic!("{id}: no functions/{bin}"));
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{id}: binary {bin}"
        );
        let timeout = num(&f["Properties"]["Timeout"]);
        let events = f["Properties"]["Events"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for (_, ev) in events {
            if ev["Type"].as_str() != Some("SQS") {
                continue;
            }
            let q = get_att_target(&ev["Properties"]["Queue"]);
            let visibility = num(&resource(&t, &q)["Properties"]["VisibilityTimeout"]);
            assert!(
                visibility >= timeout,
                "{id}: {q} visibility {visibility}s < timeout {timeout}s"
            );
            let types = &ev["Properties"]["FunctionResponseTypes"];
            assert_eq!(types[0].as_str(), Some("ReportBatchItemFailures"), "{id}");
        }
    }
}

/// Fair by default: every default limit is finite, and the functions that
/// wait on others (webhook receivers, fan-out posts) have a ceiling on
/// their concurrency.
#[test]
fn default_limits_are_finite_and_waiting_functions_have_a_ceiling() {
    let t = template();
    let text = t["Parameters"]["DefaultLimits"]["Default"]
        .as_str()
        .unwrap();
    let limits: agentwire_core::limits::TenantLimits = serde_json::from_str(text).unwrap();
    let fields: Json = serde_json::to_value(&limits).unwrap();
    for field in [
        "publish_rate",
        "publish_burst",
        "channel_publish_rate",
        "channel_publish_burst",
        "max_connections",
        "max_channels",
        "connection_action_rate",
        "connection_action_burst",
        "read_rate",
        "read_burst",
    ] {
        let v = fields[field].as_u64().unwrap_or(0);
        assert!(v > 0, "DefaultLimits sets {field} (got {})", fields[field]);
    }
    for (function, parameter) in [
        ("WebhookFunction", "WebhookMaxConcurrency"),
        ("FanoutFunction", "FanoutMaxConcurrency"),
    ] {
        let events = resource(&t, function)["Properties"]["Events"]
            .as_mapping()
            .cloned()
            .unwrap();
        let (_, ev) = events.into_iter().next().unwrap();
        let max = &ev["Properties"]["ScalingConfig"]["MaximumConcurrency"];
        let Yaml::Tagged(r) = max else {
            panic!("{function}: MaximumConcurrency is {max:?}, not !Ref {parameter}");
        };
        assert_eq!(
            (r.tag.to_string(), r.value.as_str()),
            ("!Ref".to_owned(), Some(parameter)),
            "{function}"
        );
        assert!(num(&t["Parameters"][parameter]["Default"]) >= 2);
    }
}

/// The retention floor covers the events queue's redelivery window: a
/// message SQS hands over again finds its dedup record still there.
#[test]
fn the_retention_floor_outlasts_the_events_queues_redelivery_window() {
    let t = template();
    let q = &resource(&t, "EventsQueue")["Properties"];
    let visibility = num(&q["VisibilityTimeout"]);
    let receives = num(&q["RedrivePolicy"]["maxReceiveCount"]);
    let floor = agentwire_core::config::MIN_RETENTION.as_secs();
    assert!(
        visibility * receives < floor,
        "redelivery window {visibility} s x {receives} is not under the floor of {floor} s"
    );
    let retention = t["Parameters"]["Retention"]["Default"].as_str().unwrap();
    let retention = humantime::parse_duration(retention).unwrap().as_secs();
    assert!(retention >= floor, "the default retention {retention} s");
}

/// The events queue is a trusted path (an envelope names its tenant): its
/// policy denies SendMessage to every principal but the publish function's
/// role and the listed trusted publishers. moto enforces no queue policy,
/// so this checks what the template deploys; cfn-lint checks its form.
#[test]
fn only_the_publish_function_and_trusted_publishers_may_send_to_the_events_queue() {
    let t = template();
    let policies: Vec<String> = of_type(&t, "AWS::SQS::QueuePolicy")
        .into_iter()
        .filter(|id| {
            let queues = &resource(&t, id)["Properties"]["Queues"];
            matches!(&queues[0], Yaml::Tagged(r) if r.value.as_str() == Some("EventsQueue"))
        })
        .collect();
    assert_eq!(
        policies.len(),
        1,
        "one policy on the events queue: {policies:?}"
    );
    let statements = &resource(&t, &policies[0])["Properties"]["PolicyDocument"]["Statement"];
    let deny = statements
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["Effect"].as_str() == Some("Deny"))
        .expect("a Deny statement");
    assert_eq!(deny["Principal"].as_str(), Some("*"));
    assert_eq!(deny["Action"].as_str(), Some("sqs:SendMessage"));
    assert_eq!(get_att_target(&deny["Resource"]), "EventsQueue");
    let allowed = &deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"];
    // Both branches of the !If name the publish function's role; the first
    // adds the TrustedPublishers parameter.
    let text = serde_yaml_ng::to_string(allowed).unwrap();
    assert!(text.contains("HasTrustedPublishers"), "{text}");
    assert_eq!(text.matches("PublishFunctionRole.Arn").count(), 2, "{text}");
    assert!(text.contains("TrustedPublishers"), "{text}");
    assert!(
        t["Parameters"]["TrustedPublishers"]["Default"].as_str() == Some(""),
        "no one else by default"
    );
}

#[test]
fn every_websocket_route_of_the_protocol_is_deployed() {
    let t = template();
    let routes: BTreeSet<String> = of_type(&t, "AWS::ApiGatewayV2::Route")
        .iter()
        .map(|id| {
            resource(&t, id)["Properties"]["RouteKey"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: BTreeSet<String> = [
        "$connect",
        "$disconnect",
        "$default",
        "hello",
        "join",
        "leave",
        "ack",
        "ping",
        "refresh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(routes, want);
    let ping = resource(&t, "PingIntegration");
    assert_eq!(
        ping["Properties"]["IntegrationType"].as_str(),
        Some("MOCK"),
        "ping invokes no Lambda"
    );
}

/// A test that fails (panics) drops its stack without `shutdown`: the
/// stack still deletes its tables and queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_dropped_without_shutdown_still_deletes_its_tables_and_queues() {
    let stack = agentwire_e2e::Stack::start().await;
    let tables = stack.config.tables.clone();
    let queue = stack.queue_url.clone();
    let (ddb, sqs) = (stack.ddb(), stack.sqs());
    assert!(
        ddb.describe_table()
            .table_name(&tables.events)
            .send()
            .await
            .is_ok()
    );
    drop(stack);
    for table in [
        &tables.connections,
        &tables.subscriptions,
        &tables.channels,
        &tables.events,
        &tables.cursors,
    ] {
        assert!(
            ddb.describe_table().table_name(table).send().await.is_err(),
            "{table} is left behind"
        );
    }
    assert!(
        sqs.get_queue_attributes()
            .queue_url(&queue)
            .send()
            .await
            .is_err(),
        "{queue} is left behind"
    );
}
