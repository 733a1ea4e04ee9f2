//! Clients that follow a channel, in every language the project ships:
//! the Rust client in this process, the TypeScript, Python and Go clients
//! as child processes running their `bench/follow` drivers (`joined` per
//! answered join, `{"seq":N}` per event). Shared by the benchmarks and the
//! chaos soak.

use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options};

/// Reads client events until `want` matches one, within 60 s.
pub async fn client_until(c: &mut Client, want: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), c.next()).await {
            Ok(Some(ev)) if want(&ev) => return ev,
            Ok(Some(ClientEvent::Error(e))) if e.is_fatal() => panic!("client stopped: {e}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the client stopped"),
            Err(_) => panic!("no event within 60 s"),
        }
    }
}

/// One client following a channel: in this process (Rust) or
/// a child process printing `joined` and then one `{"seq":N}` line per event.
pub enum Follower {
    Rust(Client),
    Child(Box<ChildFollower>),
}

/// A follower in a child process, and its stdout a line at a time.
pub struct ChildFollower {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Follower {
    pub async fn start(kind: &str, url: &str, token: &str, channel: &str) -> Result<Self, String> {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = match kind {
            "rust" => {
                let options = Options {
                    backoff: Backoff::new(Duration::ZERO, Duration::from_secs(30)),
                    ack_debounce: None,
                    ..Options::default()
                };
                let mut c = Client::builder()
                    .url(url)
                    .token(token)
                    .channel_since(channel, agentwire_client::Since::Head)
                    .options(options)
                    .connect()
                    .map_err(|e| e.to_string())?;
                client_until(&mut c, |e| matches!(e, ClientEvent::Joined { .. })).await;
                return Ok(Follower::Rust(c));
            }
            other => bench_script(other, "follow")?,
        };
        let mut child = cmd
            .args([url, token, channel])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {kind} follower: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
                Ok(Ok(Some(l))) if l == "joined" => break,
                Ok(Ok(Some(_))) => {}
                other => return Err(format!("the {kind} follower did not join: {other:?}")),
            }
        }
        Ok(Follower::Child(Box::new(ChildFollower { child, lines })))
    }

    /// The next delivery within `limit`: `Ok(None)` when nothing came,
    /// `Some(None)` for a `joined`, `Some(Some(seq))` for an event. A gap
    /// or a client that stopped is an error.
    pub async fn poll(&mut self, limit: Duration) -> Result<Option<Option<u64>>, String> {
        match self {
            Follower::Rust(c) => {
                let deadline = tokio::time::Instant::now() + limit;
                loop {
                    match tokio::time::timeout_at(deadline, c.next()).await {
                        Err(_) => return Ok(None),
                        Ok(None) => return Err("the client stopped".into()),
                        Ok(Some(ClientEvent::Event(e))) => return Ok(Some(Some(e.seq))),
                        Ok(Some(ClientEvent::Joined { .. })) => return Ok(Some(None)),
                        Ok(Some(ClientEvent::Gap { from, to, .. })) => {
                            return Err(format!("a gap {from}..{to}"));
                        }
                        Ok(Some(ClientEvent::Error(e))) if e.is_fatal() => {
                            return Err(format!("client stopped: {e}"));
                        }
                        Ok(Some(_)) => {}
                    }
                }
            }
            Follower::Child(c) => match tokio::time::timeout(limit, c.lines.next_line()).await {
                Err(_) => Ok(None),
                Ok(line) => {
                    let line = line
                        .map_err(|e| e.to_string())?
                        .ok_or("the follower exited")?;
                    if line == "joined" {
                        return Ok(Some(None));
                    }
                    let v: serde_json::Value =
                        serde_json::from_str(&line).map_err(|e| e.to_string())?;
                    v["seq"]
                        .as_u64()
                        .map(|s| Some(Some(s)))
                        .ok_or_else(|| format!("unexpected line from the follower: {line}"))
                }
            },
        }
    }

    /// The next delivery: `None` for a `joined`, else the event's seq.
    pub async fn next(&mut self) -> Result<Option<u64>, String> {
        match self {
            Follower::Rust(c) => {
                match client_until(c, |e| {
                    matches!(e, ClientEvent::Event(_) | ClientEvent::Joined { .. })
                })
                .await
                {
                    ClientEvent::Event(e) => Ok(Some(e.seq)),
                    _ => Ok(None),
                }
            }
            Follower::Child(c) => {
                let line = tokio::time::timeout(Duration::from_secs(60), c.lines.next_line())
                    .await
                    .map_err(|_| "nothing within 60 s".to_owned())?
                    .map_err(|e| e.to_string())?
                    .ok_or("the follower exited")?;
                if line == "joined" {
                    return Ok(None);
                }
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| e.to_string())?;
                v["seq"]
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("unexpected line from the follower: {line}"))
            }
        }
    }

    pub async fn stop(self) {
        match self {
            Follower::Rust(c) => {
                c.close().await;
            }
            Follower::Child(mut c) => {
                drop(c.child.stdin.take());
                if tokio::time::timeout(Duration::from_secs(5), c.child.wait())
                    .await
                    .is_err()
                {
                    let _ = c.child.kill().await;
                }
            }
        }
    }
}

/// The command that runs a client's bench script `name` (`bench/NAME.ts`
/// with node for `ts`, `bench/NAME.py` in the package's venv for `python`,
/// `agentwire-go-bench NAME` for `go`), from the client's directory.
pub fn bench_script(kind: &str, name: &str) -> Result<tokio::process::Command, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = match kind {
        "ts" => {
            let mut c = tokio::process::Command::new("node");
            c.current_dir(root.join("clients/ts"))
                .args(["--import", "tsx"])
                .arg(format!("bench/{name}.ts"));
            c
        }
        "python" => {
            let mut c = tokio::process::Command::new(root.join("clients/python/.venv/bin/python"));
            c.current_dir(root.join("clients/python"))
                .arg(format!("bench/{name}.py"));
            c
        }
        "go" => {
            let mut c = tokio::process::Command::new(go_bench()?);
            c.current_dir(root.join("clients/go")).arg(name);
            c
        }
        other => return Err(format!("unknown client {other:?} (rust, ts, python, go)")),
    };
    c.kill_on_drop(true);
    Ok(c)
}

/// The Go client's bench driver (`clients/go/bench`), built once per run
/// with `go build` into `target/go-bench`.
pub fn go_bench() -> Result<std::path::PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let bin = root.join("target/go-bench/agentwire-go-bench");
            let out = std::process::Command::new("go")
                .current_dir(root.join("clients/go"))
                .args(["build", "-o"])
                .arg(&bin)
                .arg("./bench")
                .output()
                .map_err(|e| format!("cannot run go: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "go build ./bench failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(bin)
        })
        .clone()
}
