//! `--only run`: what `agentwire run` costs the command it wraps. A
//! command writes coloured build-log lines as fast as it can (`yes | head
//! -c`, tens of MB/s); it runs bare, under `agentwire run` publishing to the
//! dev gateway on the local stack, and under `agentwire run` with nothing
//! listening at its URL; then at 1 MB/s for 10 s. The command's own run
//! time (it reports it on stderr: `command-ns N`) shows whether publishing
//! slowed it; the wall time adds the drain after it ended.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentwire_e2e::Stack;

/// A build-log line with ANSI colours, repeated up to `bytes`; the
/// command then says on stderr how long it ran (`command-ns N`).
fn command(bytes: u64) -> String {
    format!(
        r#"s=$(date +%s%N); yes "$(printf '\033[1;32m   Compiling\033[0m agentwire-core v0.1.0 (/src/shared/core) \033[2m[12/87]\033[0m')" | head -c {bytes}; e=$(date +%s%N); echo "command-ns $((e - s))" >&2"#
    )
}

/// The same lines at `rate` bytes a second for `seconds` (100 ms steps).
fn paced(rate: u64, seconds: u64) -> String {
    let step = rate / 10;
    format!(
        r#"s=$(date +%s%N); python3 -c '
import sys, time
line = b"\x1b[1;32m   Compiling\x1b[0m agentwire-core v0.1.0 (/src/shared/core) \x1b[2m[12/87]\x1b[0m\n"
block = (line * ({step} // len(line) + 1))[:{step}]
start = time.monotonic()
for i in range({seconds} * 10):
    sys.stdout.buffer.write(block); sys.stdout.flush()
    time.sleep(max(0.0, start + (i + 1) / 10 - time.monotonic()))
'; e=$(date +%s%N); echo "command-ns $((e - s))" >&2"#
    )
}

/// The run time the command reported.
fn command_ms(stderr: &str) -> f64 {
    stderr
        .split("command-ns ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e6)
}

struct Case {
    name: &'static str,
    megabytes: f64,
    command_ms: f64,
    wall: Duration,
    events: String,
    dropped: String,
}

pub async fn run(bin_dir: &Path, megabytes: u64) -> Result<(), String> {
    let agentwire = bin_dir.join("agentwire");
    if !agentwire.is_file() {
        return Err(format!(
            "{} is missing: cargo build --release -p agentwire-cli",
            agentwire.display()
        ));
    }
    let bytes = megabytes * 1_000_000;
    let script = command(bytes);
    let mut cases = Vec::new();

    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let wall = t.elapsed();
    if !out.status.success() {
        return Err("the bare command failed".into());
    }
    cases.push(Case {
        name: "bare",
        megabytes: megabytes as f64,
        command_ms: command_ms(&String::from_utf8_lossy(&out.stderr)),
        wall,
        events: "-".into(),
        dropped: "-".into(),
    });

    let stack = Stack::start().await;
    let token = stack.publisher_token("bench", &["bench-run-*"]);
    let url = stack.gateway.http_url();
    cases.push(wrapped(
        "agentwire run, gateway up",
        megabytes as f64,
        &agentwire,
        &url,
        &token,
        &script,
        "bench-run-up",
    )?);
    cases.push(wrapped(
        "agentwire run, gateway up, 1 MB/s for 10 s",
        10.0,
        &agentwire,
        &url,
        &token,
        &paced(1_000_000, 10),
        "bench-run-paced",
    )?);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    cases.push(wrapped(
        "agentwire run, gateway unreachable",
        megabytes as f64,
        &agentwire,
        &format!("http://127.0.0.1:{closed}"),
        &token,
        &script,
        "bench-run-down",
    )?);
    stack.shutdown().await;

    println!(
        "`agentwire run` around a command writing {megabytes} MB of coloured log lines as fast as it can (and at 1 MB/s); default --drain-timeout (10 s):"
    );
    println!();
    println!(
        "| case | command's run time | wall time | MB/s (wall) | events published | bytes dropped |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for c in &cases {
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.1} | {} | {} |",
            c.name,
            c.command_ms,
            c.wall.as_secs_f64() * 1000.0,
            c.megabytes / c.wall.as_secs_f64(),
            c.events,
            c.dropped
        );
    }
    Ok(())
}

/// The command under `agentwire run`; its report line parsed.
fn wrapped(
    name: &'static str,
    megabytes: f64,
    agentwire: &Path,
    url: &str,
    token: &str,
    script: &str,
    channel: &str,
) -> Result<Case, String> {
    let t = Instant::now();
    let out = Command::new(agentwire)
        .args(["run", "--url", url, "--token", token, "--channel", channel])
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let wall = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{name}: {stderr}"));
    }
    // "published N events (B bytes of output, D dropped …)" or
    // "published N events of run …, then stopped: …".
    let events = stderr
        .split("published ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    let dropped = match stderr.split(" dropped while publishing fell behind").next() {
        Some(before) if before.len() < stderr.len() => {
            before.rsplit(' ').next().unwrap_or("?").to_owned()
        }
        _ if stderr.contains("then stopped") => "all (unreachable)".to_owned(),
        _ => "0".to_owned(),
    };
    Ok(Case {
        name,
        megabytes,
        command_ms: command_ms(&stderr),
        wall,
        events,
        dropped,
    })
}
