//! Webhook configuration as durable channel state, on the local stack's
//! tables: set, read back by a fresh client, rotate with a grace period,
//! tenant default vs channel, refusal of private addresses, removal.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_aws::DynamoWebhooks;
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::WebhookDirectory;
use agentwire_core::usecases::{DeadWebhooks, WebhookAdmin, WebhookAdminError};
use agentwire_core::webhook::{
    UrlPolicy, UrlRefusal, WebhookMode, WebhookScope, signature::signature_header,
};
use agentwire_e2e::Stack;

fn store(stack: &Stack) -> Arc<DynamoWebhooks> {
    Arc::new(
        DynamoWebhooks::new(
            stack.ddb(),
            stack.config.tables.clone(),
            stack.clock.clone(),
        )
        .with_secrets(),
    )
}

/// The channel's item (what the session, the dispatcher and the reads
/// read) holds no secret; an adapter without secrets never shows one; the
/// secrets live on their own `whsec#` item, read by delivery only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_stay_off_the_channel_item() {
    use agentwire_core::model::ChannelKey;
    use agentwire_core::ports::{WebhookDirectory, WebhookStore};
    let stack = Stack::start().await;
    let key = ChannelKey::new(&stack.tenant, "agent-s");
    let scope = WebhookScope::Channel(key.clone());
    let policy = UrlPolicy {
        allow_insecure_loopback: true,
        ..UrlPolicy::default()
    };
    let set = admin(&stack, policy)
        .set(
            &scope,
            "http://127.0.0.1:9/hook",
            WebhookMode::Fallback,
            None,
        )
        .await
        .unwrap();
    assert!(set.secret.starts_with("whsec_"));
    let item = stack
        .ddb()
        .get_item()
        .table_name(&stack.config.tables.channels)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{}#agent-s", stack.tenant)),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("the channel item");
    let text = format!("{item:?}");
    assert!(
        !text.contains(&set.secret),
        "no secret on the channel item: {text}"
    );
    let plain = DynamoWebhooks::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let (_, seen) = plain.effective(&key).await.unwrap().expect("the webhook");
    assert_eq!(
        (seen.url.as_str(), seen.secret.as_str()),
        ("http://127.0.0.1:9/hook", "")
    );
    let whole = store(&stack).get(&scope).await.unwrap().unwrap();
    assert_eq!(whole.secret, set.secret, "delivery reads it whole");
    stack.shutdown().await;
}

fn admin(stack: &Stack, policy: UrlPolicy) -> WebhookAdmin {
    WebhookAdmin::new(store(stack), policy, Arc::new(SystemClock))
}

fn local_policy() -> UrlPolicy {
    UrlPolicy {
        allow_insecure_loopback: true,
        allow_hosts: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_durable_state_read_for_every_event_until_removed() {
    let stack = Stack::start().await;
    let key = ChannelKey::new(&stack.tenant, "agent-9");
    let channel = WebhookScope::Channel(key.clone());
    let tenant = WebhookScope::TenantDefault(stack.tenant.clone());
    let a = admin(&stack, local_policy());

    a.set(
        &tenant,
        "http://127.0.0.1:9/default",
        WebhookMode::Fallback,
        None,
    )
    .await
    .unwrap();
    let set = a
        .set(
            &channel,
            "http://127.0.0.1:9/hook",
            WebhookMode::Fallback,
            None,
        )
        .await
        .unwrap();
    // Read back through a fresh client: it is state, not a one-shot token.
    for _ in 0..3 {
        let (_, seen) = store(&stack).effective(&key).await.unwrap().unwrap();
        assert_eq!(seen, set);
    }
    // Setting a webhook never disturbs the channel's log.
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    let joined = c.join(serde_json::json!(["agent-9"])).await;
    assert_eq!(joined["channels"][0]["head"], 0, "{joined}");

    // Rotation: both secrets sign during the grace period.
    let rotated = a.rotate(&channel, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        rotated.previous_secret.as_deref(),
        Some(set.secret.as_str())
    );
    let now = SystemClock.epoch_s();
    let secrets = rotated.signing_secrets(now).unwrap();
    let header = signature_header(&secrets, "evt-1", now, b"{}");
    assert_eq!(header.matches("v1,").count(), 2);
    for s in &secrets {
        assert!(s.verify("evt-1", now, b"{}", &header));
    }

    // Removing the channel's webhook falls back to the tenant default.
    a.remove(&channel).await.unwrap();
    assert_eq!(
        store(&stack).effective(&key).await.unwrap().unwrap().1.url,
        "http://127.0.0.1:9/default"
    );
    a.remove(&tenant).await.unwrap();
    assert!(store(&stack).effective(&key).await.unwrap().is_none());
    assert!(matches!(
        a.get(&channel).await,
        Err(WebhookAdminError::NotFound(_))
    ));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_link_local_and_metadata_urls_are_refused_when_set() {
    let stack = Stack::start().await;
    let scope = WebhookScope::Channel(ChannelKey::new(&stack.tenant, "ops"));
    let strict = admin(&stack, UrlPolicy::default());
    for url in [
        "https://10.0.0.8/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
    ] {
        let err = strict
            .set(&scope, url, WebhookMode::Always, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, WebhookAdminError::Url(UrlRefusal::Forbidden { .. })),
            "{url}: {err}"
        );
    }
    let err = strict
        .set(&scope, "http://127.0.0.1:9/hook", WebhookMode::Always, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WebhookAdminError::Url(UrlRefusal::Insecure)),
        "{err}"
    );
    assert!(
        matches!(
            strict.get(&scope).await,
            Err(WebhookAdminError::NotFound(_))
        ),
        "nothing stored"
    );
    stack.shutdown().await;
}

// ---- delivery, end to end: dispatcher → webhook queue → webhook function → a real HTTP receiver

use agentwire_aws::SqsWebhookJobs;
use agentwire_core::webhook::RetrySchedule;
use agentwire_e2e::StackOptions;
use agentwire_e2e::receiver::{Received, Receiver};
use serde_json::json;

/// Recomputes the Standard Webhooks signature with `hmac`/`sha2` directly,
/// independently of agentwire's signer.
fn signed_by(secret: &str, r: &Received) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, KeyInit, Mac};
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let signed = format!(
        "{}.{}.{}",
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.body
    );
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

fn quick() -> StackOptions {
    StackOptions {
        webhook_schedule: Some(RetrySchedule::new(vec![
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ])),
        ..StackOptions::default()
    }
}

async fn hooked(stack: &Stack, channel: &str, mode: WebhookMode, receiver: &Receiver) -> String {
    let scope = WebhookScope::Channel(ChannelKey::new(&stack.tenant, channel));
    admin(stack, local_policy())
        .set(&scope, &receiver.url, mode, None)
        .await
        .unwrap()
        .secret
}

/// The `webhook-id` of event `id` of `channel`: unique per tenant and channel.
fn webhook_id(stack: &Stack, channel: &str, id: &str) -> String {
    agentwire_core::model::ChannelKey::new(&stack.tenant, channel).scoped_id(id)
}

/// Publishes a marker to `channel` and waits for it to reach the receiver
/// as request `n`: the events committed before it have been handed to the
/// webhook queue before it (the events queue is FIFO per channel). The
/// webhook queue is a standard queue, so this orders the hand-off, not a
/// redelivery SQS might make later; a job that failed would be retried
/// after the marker, and the tests that use this check that every request
/// before it was answered 2xx. Returns every request.
async fn marker(stack: &Stack, channel: &str, receiver: &Receiver, n: usize) -> Vec<Received> {
    let id = webhook_id(
        stack,
        channel,
        &stack.publish(channel, "marker", json!({})).await,
    );
    let got = receiver.wait_for(n, Duration::from_secs(30)).await;
    assert_eq!(
        got.iter()
            .map(|r| r.header("webhook-id"))
            .position(|h| h == id),
        Some(n - 1),
        "the marker is request {n}: {got:?}"
    );
    got
}

/// No message on the queue: none visible, in flight or delayed.
async fn queue_empty(stack: &Stack, url: &str) -> bool {
    stack.queue_counts(url).await.unwrap() == agentwire_e2e::QueueCounts::default()
}

/// Every event id answered 2xx exactly once.
fn delivered_once(got: &[Received]) {
    let mut ok: Vec<&str> = got
        .iter()
        .filter(|r| (200..300).contains(&r.answered))
        .map(|r| r.header("webhook-id"))
        .collect();
    let n = ok.len();
    ok.sort();
    ok.dedup();
    assert_eq!(ok.len(), n, "an event reached the 2xx receiver twice");
}

fn dead_jobs(stack: &Stack) -> DeadWebhooks {
    let jobs = Arc::new(SqsWebhookJobs::new(
        stack.sqs(),
        &stack.webhook_queue_url,
        &stack.webhook_dlq_url,
    ));
    DeadWebhooks::new(jobs.clone(), jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_connected_the_status_and_the_final_event_both_arrive_signed_in_order() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    let secret = hooked(&stack, "run-7", WebhookMode::Fallback, &receiver).await;
    let status_id = webhook_id(
        &stack,
        "run-7",
        &stack
            .publish("run-7", "status", json!({"text": "thinking"}))
            .await,
    );
    let final_id = webhook_id(
        &stack,
        "run-7",
        &stack
            .publish("run-7", "final", json!({"text": "the answer"}))
            .await,
    );
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let seen: Vec<(u64, String, String)> = got
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["seq"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
                r.header("webhook-id").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "status".into(), status_id),
            (2, "final".into(), final_id)
        ]
    );
    for r in &got {
        assert!(signed_by(&secret, r), "signature does not verify: {r:?}");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.json()["type"], "event");
        assert!(r.header("webhook-timestamp").parse::<u64>().is_ok());
    }
    let all = marker(&stack, "run-7", &receiver, 3).await;
    assert_eq!(all.len(), 3, "nothing more before the marker");
    delivered_once(&all);
    stack.shutdown().await;
}

/// An HTTP publish is committed and handed to the webhook by the publish
/// function itself: the receiver gets it signed, with the seq the answer
/// gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_publish_with_nobody_connected_reaches_the_webhook_with_its_seq() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    let secret = hooked(&stack, "run-8", WebhookMode::Fallback, &receiver).await;
    let publisher = stack.publisher_token("bot", &["run-8"]);
    let body = json!({"kind": "final", "data": {"text": "over HTTP"}});
    let (status, _, answer) = stack.post_event(&publisher, "run-8", &body).await;
    assert_eq!((status, &answer["seq"]), (201, &json!(1)), "{answer}");
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let v = got[0].json();
    assert_eq!(
        (&v["seq"], &v["id"], &v["kind"]),
        (&json!(1), &answer["id"], &json!("final"))
    );
    assert!(
        signed_by(&secret, &got[0]),
        "signature does not verify: {:?}",
        got[0]
    );
    let all = marker(&stack, "run-8", &receiver, 2).await;
    assert_eq!(all.len(), 2, "nothing more before the marker");
    delivered_once(&all);
    stack.shutdown().await;
}

/// A stream text is stored compressed; the webhook gets it as text, as
/// published (a receiver has no `hello` to announce gzip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_stream_text_reaches_the_webhook_as_text() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    hooked(&stack, "run-9", WebhookMode::Fallback, &receiver).await;
    let publisher = stack.publisher_token("bot", &["run-9"]);
    let text = "\u{1b}[32m   Compiling\u{1b}[0m agentwire-core v0.1.0\n".repeat(200);
    let data = json!({"stream": "out", "index": 0, "text": text});
    let (status, _, answer) = stack
        .post_event(
            &publisher,
            "run-9",
            &json!({"kind": "output", "data": data}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let stored = stack.stored_data("run-9").await;
    assert!(
        stored[0].1.contains("\"gz\"") && stored[0].1.len() * 10 < text.len(),
        "stored compressed: {} bytes",
        stored[0].1.len()
    );
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["data"], data);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscriber_in_fallback_mode_means_no_webhook_call() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    hooked(&stack, "live", WebhookMode::Fallback, &receiver).await;
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!(["live"])).await;
    stack.publish("live", "status", json!({})).await;
    assert_eq!(c.events(1).await[0]["seq"], 1);
    // Once nobody is connected, a marker goes to the webhook; it is the
    // first request, so seq 1 (delivered live) never was.
    c.ws.close(None).await.unwrap();
    assert!(
        stack
            .eventually(Duration::from_secs(10), || async {
                stack.subscription_ids("live").await.is_empty()
            })
            .await
    );
    let got = marker(&stack, "live", &receiver, 1).await;
    assert_eq!(got[0].json()["seq"], 2, "{got:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_twice_then_200_is_delivered_once_with_the_same_webhook_id() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    let secret = hooked(&stack, "flaky", WebhookMode::Fallback, &receiver).await;
    receiver.answer_next(&[503, 503]);
    let id = webhook_id(
        &stack,
        "flaky",
        &stack.publish("flaky", "final", json!({"n": 1})).await,
    );
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    let answers: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answers, vec![503, 503, 200]);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == id && signed_by(&secret, r))
    );
    let all = marker(&stack, "flaky", &receiver, 4).await;
    assert_eq!(
        all.len(),
        4,
        "delivered once, then nothing more before the marker"
    );
    delivered_once(&all);
    assert!(
        dead_jobs(&stack)
            .list(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_lands_in_the_dlq_with_status_and_reason_and_redrive_delivers_it() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    hooked(&stack, "strict", WebhookMode::Always, &receiver).await;
    receiver.answer_next(&[400]);
    let id = stack.publish("strict", "final", json!({"n": 1})).await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let jobs = dead_jobs(&stack);
    let mut dead = Vec::new();
    for _ in 0..40 {
        // Held for no time: what is listed is visible again at once.
        dead = jobs.list(10, Duration::ZERO).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        (d.event_id.as_str(), d.attempts, d.last_status),
        (id.as_str(), 1, Some(400))
    );
    assert!(
        d.reason.contains("400") && d.reason.contains("permanent"),
        "{}",
        d.reason
    );
    assert_eq!(receiver.requests().len(), 1, "a 4xx is not retried");

    // The receiver is fixed (it answers 200 from now on); redrive.
    let again = jobs.list(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 1);
    jobs.redrive(&again[0]).await.unwrap();
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[1].answered, got[1].header("webhook-id")),
        (200, webhook_id(&stack, "strict", &id).as_str())
    );
    // The redrive deleted it from the dead-letter queue before returning.
    assert!(
        jobs.list(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty(),
        "the DLQ is empty again"
    );
    delivered_once(&receiver.requests());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_webhook_and_shows_why() {
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    hooked(&stack, "gone", WebhookMode::Always, &receiver).await;
    receiver.answer_next(&[410]);
    stack.publish("gone", "status", json!({})).await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let a = admin(&stack, local_policy());
    let scope = WebhookScope::Channel(ChannelKey::new(&stack.tenant, "gone"));
    let disabled = stack
        .eventually(Duration::from_secs(10), || async {
            a.get(&scope).await.unwrap().disabled.is_some()
        })
        .await;
    assert!(disabled);
    assert!(
        a.get(&scope)
            .await
            .unwrap()
            .disabled
            .unwrap()
            .contains("410")
    );
    // The next event's job is kept in the dead-letter queue with the
    // reason, and the receiver is not called.
    // The next event is committed and not handed to the webhook: once the
    // dispatcher has deleted its message (after the hand-off decision) and
    // the webhook queue holds nothing, the receiver still has one request.
    stack.publish("gone", "status", json!({})).await;
    assert!(
        stack
            .eventually(Duration::from_secs(20), || async {
                stack.stored_events("gone").await.len() == 2
                    && queue_empty(&stack, &stack.queue_url).await
                    && queue_empty(&stack, &stack.webhook_queue_url).await
            })
            .await,
        "the second event is dispatched and no webhook job is pending"
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "a disabled webhook is not called"
    );
    stack.shutdown().await;
}

/// A batch of jobs always finishes within the invocation: a job that could
/// not finish before the deadline is not started and comes back from the
/// queue (reported as a batch item failure), untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_cannot_finish_before_the_deadline_are_not_started() {
    use agentwire_fn_webhook::WebhookFunction;
    use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
    let stack = Stack::start_with(quick()).await;
    let receiver = Receiver::start().await;
    hooked(&stack, "late", WebhookMode::Fallback, &receiver).await;
    let deps = agentwire_aws::deps::Deps::new(&stack.sdk, stack.config.clone());
    let function = WebhookFunction::new(&deps).unwrap();
    let job = |id: &str| {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(
            serde_json::to_string(&agentwire_core::model::WebhookJob::new(
                &stack.tenant,
                agentwire_protocol::EventFrame {
                    channel: "late".into(),
                    epoch: "e".into(),
                    seq: 1,
                    id: id.into(),
                    kind: "final".into(),
                    data: json!({}).into(),
                    ts: "2026-11-23T09:00:00.000Z".into(),
                },
            ))
            .unwrap(),
        );
        m
    };
    let mut event = SqsEvent::default();
    event.records = vec![job("j1"), job("j2")];
    // 10 s left: less than one job's budget (5 s DNS + 15 s POST + 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resp = function.handle_until(event, deadline).await.unwrap();
    let failed: Vec<String> = resp
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    assert_eq!(failed, vec!["j1", "j2"]);
    // The receiver saw nothing: a marker delivered afterwards is the first.
    let marker = stack
        .publish("late", "final", json!({"marker": true}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["id"], marker.as_str(), "{got:?}");
    stack.shutdown().await;
}

/// Two tenants, one receiver that hangs: once the hanging receiver's
/// first POST times out, its tenant's other jobs are held (not sent), so
/// the other tenant's deliveries wait at most one POST time-out for a free
/// webhook instance. Without the hold, the 20 hanging jobs would take the
/// 5 instances for 4 time-outs in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_hanging_receiver_delays_another_tenants_deliveries_by_one_time_out_at_most() {
    let timeout = Duration::from_secs(3);
    let stack = Stack::start_with(StackOptions {
        webhook_timeout: Some(timeout),
        ..quick()
    })
    .await;
    let pollers = agentwire_local::GatewayOptions::default().webhook_pollers;
    let hanging = Receiver::hanging().await;
    let good = Receiver::start().await;
    hooked(&stack, "slow", WebhookMode::Fallback, &hanging).await;
    let other = format!("{}-b", stack.tenant);
    admin(&stack, local_policy())
        .set(
            &WebhookScope::Channel(ChannelKey::new(&other, "fast")),
            &good.url,
            WebhookMode::Fallback,
            None,
        )
        .await
        .unwrap();

    for i in 0..20 {
        stack.publish("slow", "n", json!({"i": i})).await;
    }
    // The hang has begun: the webhook instances are taking the slow jobs.
    assert!(
        !hanging
            .wait_for(1, Duration::from_secs(30))
            .await
            .is_empty()
    );
    let started = std::time::Instant::now();
    for i in 0..5 {
        stack.publish_as(&other, "fast", "n", json!({"i": i})).await;
    }
    let got = good.wait_for(5, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 5, "every event of the other tenant arrived");
    let last = got.iter().map(|r| r.at).max().unwrap() - started;
    println!(
        "the other tenant's 5 deliveries took {last:?} (POST time-out {timeout:?}); the hanging receiver got {} requests",
        hanging.requests().len()
    );
    assert!(
        last < timeout + Duration::from_secs(3),
        "within one time-out and the path's own latency: {last:?}"
    );
    // One request per instance when the hang began, then held: not one per job.
    assert!(
        hanging.requests().len() <= pollers + 1,
        "{} requests reached the hanging receiver",
        hanging.requests().len()
    );
    stack.shutdown().await;
}
