//! `agentwire publish --url` against the dev gateway's HTTP publish route on
//! the local stack: the real binary, a real subscriber.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agentwire_e2e::Stack;
use serde_json::json;

fn agentwire(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .env_remove("AGENTWIRE_TOKEN")
        .env_remove("AGENTWIRE_PUBLISH_URL")
        .output()
        .expect("the agentwire binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_http_reaches_a_subscriber_and_refusals_are_explained() {
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-9"])).await["type"], "joined");
    let url = stack.gateway.http_url();
    let token = stack.publisher_token("bot", &["agent-9"]);
    let (ok, id, err) = agentwire(&[
        "publish",
        "--url",
        &url,
        "--token",
        &token,
        "--channel",
        "agent-9",
        "--kind",
        "status",
        "--data",
        r#"{"n":1}"#,
        "--id",
        "cli-1",
    ]);
    assert!(ok, "{err}");
    assert_eq!(id, "cli-1");
    let got = sub.events(1).await;
    assert_eq!(
        (got[0]["id"].as_str(), got[0]["data"]["n"].as_u64()),
        (Some("cli-1"), Some(1))
    );

    let (ok, _, err) = agentwire(&[
        "publish",
        "--url",
        &url,
        "--token",
        &token,
        "--channel",
        "agent-1",
        "--kind",
        "status",
    ]);
    assert!(!ok);
    assert!(err.contains("403") && err.contains("forbidden"), "{err}");
    stack.shutdown().await;
}
