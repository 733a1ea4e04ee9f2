//! `agentwire run` against the dev gateway on the local stack: the real
//! binary runs real commands, a real subscriber sees the run.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use agentwire_e2e::Stack;
use serde_json::{Value, json};

/// `agentwire run` with `args` before `--` and `command` after it: the
/// process, its stdout and stderr piped.
fn spawn_run(args: &[&str], command: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .arg("run")
        .args(args)
        .arg("--")
        .args(command)
        .env_remove("AGENTWIRE_TOKEN")
        .env_remove("AGENTWIRE_PUBLISH_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agentwire binary runs")
}

/// A subscriber joined to `channel`.
async fn watcher(stack: &Stack, channel: &str) -> agentwire_e2e::WsClient {
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!([channel])).await["type"], "joined");
    sub
}

/// Events of the channel until the run's closing event.
async fn run_events(sub: &mut agentwire_e2e::WsClient) -> Vec<Value> {
    sub.frames_until(|got| {
        got.last().is_some_and(|e| {
            e["type"] == "event" && (e["kind"] == "RUN_FINISHED" || e["kind"] == "RUN_ERROR")
        })
    })
    .await
    .into_iter()
    .filter(|f| f["type"] == "event")
    .collect()
}

/// The texts of one output stream in seq order, and whether it ended.
fn stream_text(events: &[Value], kind: &str) -> (String, bool) {
    let mut text = String::new();
    let mut ended = false;
    for (index, e) in events.iter().filter(|e| e["kind"] == kind).enumerate() {
        assert_eq!(e["data"]["index"], index, "indexes without holes: {e}");
        if e["data"]["end"] == true {
            ended = true;
        } else {
            text.push_str(e["data"]["text"].as_str().unwrap());
        }
    }
    (text, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_publishes_its_lifecycle_output_and_progress_and_exits_with_the_commands_status() {
    let stack = Stack::start().await;
    let mut sub = watcher(&stack, "agent-run").await;
    let url = stack.gateway.http_url();
    let token = stack.publisher_token("bot", &["agent-run"]);
    let script = r#"for i in 1 2 3; do printf '\033[1;32mstep %s/3\033[0m files\n' $i; printf 'warn %s\n' $i >&2; done; exit 3"#;
    let child = spawn_run(
        &[
            "--url",
            &url,
            "--token",
            &token,
            "--channel",
            "agent-run",
            "--run-id",
            "build-1",
            "--progress-regex",
            r"(?P<done>\d+)/(?P<total>\d+)",
        ],
        &["sh", "-c", script],
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let expected_stdout: String = (1..=3)
        .map(|i| format!("\x1b[1;32mstep {i}/3\x1b[0m files\n"))
        .collect();
    // The command's output is copied to agentwire's own, byte for byte.
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected_stdout);
    assert!(stderr.contains("warn 1\nwarn 2\nwarn 3\n"), "{stderr}");

    let events = run_events(&mut sub).await;
    let first = &events[0];
    assert_eq!(
        (first["kind"].as_str(), &first["data"]),
        (
            Some("RUN_STARTED"),
            &json!({"type": "RUN_STARTED", "threadId": "agent-run", "runId": "build-1"})
        )
    );
    assert_eq!(stream_text(&events, "stdout"), (expected_stdout, true));
    assert_eq!(
        stream_text(&events, "stderr"),
        ("warn 1\nwarn 2\nwarn 3\n".to_owned(), true)
    );
    // Progress, latest-wins per window: at least the last, each after the
    // output line that told it.
    let progress: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["kind"] == "CUSTOM" && e["data"]["name"] == "agentwire.progress")
        .map(|(i, e)| (i, &e["data"]["value"]))
        .collect();
    assert_eq!(
        progress.last().map(|p| p.1),
        Some(&json!({"done": 3, "total": 3, "label": "step 3/3 files"}))
    );
    for (at, value) in &progress {
        let line = format!("step {}/3", value["done"]);
        let told: String = stream_text(&events[..*at], "stdout").0;
        assert!(told.contains(&line), "progress {value} before its line");
    }
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "RUN_ERROR");
    assert_eq!(last["data"]["code"], "exit:3");
    let message = last["data"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("sh exited with status 3 after "),
        "{message}"
    );
    // Every seq once, in order.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // A second run on the channel that succeeds.
    let out = spawn_run(
        &[
            "--url",
            &url,
            "--token",
            &token,
            "--channel",
            "agent-run",
            "-q",
        ],
        &["true"],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "-q: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = run_events(&mut sub).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // No output: no streams.
    assert_eq!(kinds, ["RUN_STARTED", "RUN_FINISHED"]);
    assert_eq!(events[1]["data"]["result"]["exitCode"], 0);
    assert!(events[1]["data"]["result"]["durationMs"].is_u64());
    stack.shutdown().await;
}

/// Reads the child's stdout until a line equals `ready`.
fn wait_ready(child: &mut std::process::Child) -> BufReader<std::process::ChildStdout> {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no ready line");
        if line.trim() == "ready" {
            return stdout;
        }
    }
}

fn kill(child: &std::process::Child, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_command_and_a_death_by_signal_is_a_run_error() {
    let stack = Stack::start().await;
    let mut sub = watcher(&stack, "agent-sig").await;
    let url = stack.gateway.http_url();
    let token = stack.publisher_token("bot", &["agent-sig"]);
    let args = ["--url", &url, "--token", &token, "--channel", "agent-sig"];

    // A command that handles SIGTERM: it gets it, once, and its status is ours.
    let mut child = spawn_run(
        &args,
        &[
            "sh",
            "-c",
            r#"trap 'echo got-term >&2; exit 7' TERM; echo ready; while :; do sleep 0.05; done"#,
        ],
    );
    let _stdout = wait_ready(&mut child);
    kill(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    let events = run_events(&mut sub).await;
    assert!(stream_text(&events, "stderr").0.contains("got-term"));
    assert_eq!(events.last().unwrap()["data"]["code"], "exit:7");

    // A command that does not: killed by the signal, 128 + its number.
    let mut child = spawn_run(&args, &["sh", "-c", "echo ready; exec sleep 30"]);
    let _stdout = wait_ready(&mut child);
    kill(&child, "INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let events = run_events(&mut sub).await;
    let last = &events.last().unwrap()["data"];
    assert_eq!(last["code"], "signal:SIGINT");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("sleep was killed by SIGINT")
            || last["message"]
                .as_str()
                .unwrap()
                .starts_with("sh was killed by SIGINT"),
        "{last}"
    );

    // A command that cannot start: 127, and the run says why.
    let out = spawn_run(&args, &["/nonexistent/agentwire-test-command"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let events = run_events(&mut sub).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["RUN_STARTED", "RUN_ERROR"]);
    assert_eq!(events[1]["data"]["code"], "spawn");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_is_down_or_refuses_never_stops_the_command() {
    let stack = Stack::start().await;
    // Nothing listens on a port just freed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let five_mb = "head -c 5000000 /dev/zero | tr '\\0' x";
    let mut child = spawn_run(
        &[
            "--url",
            &format!("http://127.0.0.1:{closed}"),
            "--token",
            "t",
            "--channel",
            "agent-down",
            "--drain-timeout",
            "1s",
        ],
        &["sh", "-c", five_mb],
    );
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.len(), 5_000_000, "all of the command's output");
    assert_eq!(stderr.matches("cannot publish to").count(), 1, "{stderr}");
    assert!(stderr.contains("--drain-timeout"), "{stderr}");

    // A token without a publish grant for the channel: refused, said once,
    // and the command runs to its end with its own status.
    let token = stack.publisher_token("bot", &["other-*"]);
    let out = spawn_run(
        &[
            "--url",
            &stack.gateway.http_url(),
            "--token",
            &token,
            "--channel",
            "agent-refused",
        ],
        &["sh", "-c", "echo one; echo two; exit 4"],
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert_eq!(
        stderr.matches("publishing stops here").count(),
        1,
        "{stderr}"
    );
    stack.shutdown().await;
}
