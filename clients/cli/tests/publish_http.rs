//! `agentwire publish --url` against the dev gateway's HTTP publish route on
//! the local stack: the real binary, a real subscriber.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agentwire_e2e::Stack;
use serde_json::json;

fn agentwire(args: &[&str]) -> (bool, String, String) {
    agentwire_stdin(args, b"")
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
    // Over HTTP the key is the publisher's own: the id is it behind a tag.
    let scoped =
        |k: &str| agentwire_core::usecases::publish::publisher_scoped_id("bot", k).unwrap();
    assert_eq!(id, scoped("cli-1"));
    let got = sub.events(1).await;
    assert_eq!(
        (got[0]["id"].as_str(), got[0]["data"]["n"].as_u64()),
        (Some(scoped("cli-1").as_str()), Some(1))
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

/// Runs `agentwire` with `input` on its stdin.
fn agentwire_stdin(args: &[&str], input: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .env_remove("AGENTWIRE_TOKEN")
        .env_remove("AGENTWIRE_PUBLISH_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agentwire binary runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("it ends");
    writer.join().expect("writer").expect("stdin written");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_stream_and_a_file_arrive_whole_and_in_order() {
    let stack = Stack::start().await;
    let mut sub = stack.client(&stack.token("viewer", &["build-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["build-1"])).await["type"], "joined");
    let url = stack.gateway.http_url();
    let token = stack.publisher_token("bot", &["build-*"]);
    // 300 KB of build output, piped: a handful of coalesced events.
    let output: String = (0..5000)
        .map(|i| format!("[{i:>5}] compiling crate {i} — ok\n"))
        .collect();
    let (ok, id, err) = agentwire_stdin(
        &[
            "publish",
            "--url",
            &url,
            "--token",
            &token,
            "--channel",
            "build-1",
            "--kind",
            "output",
            "--stream",
            "--id",
            "make-1",
        ],
        output.as_bytes(),
    );
    assert!(ok, "{err}");
    assert_eq!(id, "make-1");
    assert!(err.contains("streamed") && err.contains("make-1"), "{err}");
    // "streamed B bytes as N events (stream ID)"
    let n: usize = err
        .split(" as ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {err:?}"));
    let got = sub.events(n).await;
    let mut text = String::new();
    for (i, ev) in got.iter().enumerate() {
        assert_eq!(
            ev["id"],
            agentwire_core::usecases::publish::publisher_scoped_id("bot", &format!("make-1:{i}"))
                .unwrap()
        );
        assert_eq!(ev["data"]["index"].as_u64(), Some(i as u64));
        if i + 1 < n {
            text.push_str(ev["data"]["text"].as_str().unwrap());
        } else {
            assert_eq!(ev["data"]["end"], true);
        }
    }
    assert_eq!(text, output);
    assert!(n < 10, "{n} events for 5,000 lines");

    // A file larger than one event: chunk events of one message.
    let dir = std::env::temp_dir().join(format!("agentwire-cli-{}", stack.tenant));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("build.log");
    std::fs::write(&path, output.repeat(2)).unwrap();
    let (ok, id, err) = agentwire(&[
        "publish",
        "--url",
        &url,
        "--token",
        &token,
        "--channel",
        "build-1",
        "--kind",
        "log",
        "--file",
        path.to_str().unwrap(),
        "--id",
        "log-1",
    ]);
    assert!(ok, "{err}");
    assert_eq!(id, "log-1");
    let chunks = (output.len() * 2).div_ceil(64 * 1024);
    let got = sub.events(chunks).await;
    let mut r = agentwire_protocol::chunks::Reassembler::default();
    let mut whole = None;
    for e in &got {
        if let agentwire_protocol::chunks::Assembled::Complete(m) =
            r.accept("build-1", e["seq"].as_u64().unwrap(), "log", &e["data"])
        {
            whole = Some(m);
        }
    }
    let m = whole.expect("the message completes");
    assert_eq!(
        m.payload,
        agentwire_protocol::chunks::Payload::Text(output.repeat(2))
    );
    std::fs::remove_dir_all(&dir).ok();
    stack.shutdown().await;
}
