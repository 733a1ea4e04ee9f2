//! `agentwire tail`: follow channels with the reconnecting client. Events
//! (and gaps) go to stdout as JSON lines; connection state goes to stderr.
//! It keeps running across dropped connections and gateway restarts, and
//! resumes from the last seq it printed.

use crate::error::CliError;
use agentwire_client::TokenError;
use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options, Since};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's WebSocket URL, e.g. ws://127.0.0.1:8080.
    #[arg(long, env = "AGENTWIRE_URL")]
    url: String,
    /// A token from `agentwire token`.
    #[arg(
        long,
        env = "AGENTWIRE_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_command"
    )]
    token: Option<String>,
    /// A shell command that prints a fresh token; run before every
    /// connection attempt, so an expired token is replaced on reconnect.
    #[arg(long, conflicts_with = "token")]
    token_command: Option<String>,
    /// Channels to join (repeat or comma-separate).
    #[arg(long, required = true, value_delimiter = ',')]
    channel: Vec<String>,
    /// Only new events (`head`), instead of resuming from the durable cursor.
    #[arg(long)]
    from_head: bool,
    /// Do not move the durable cursor (by default printed seqs are acked).
    #[arg(long)]
    no_ack: bool,
    /// Stop after this many reconnect attempts in a row (default: never).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// The largest delay between reconnect attempts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), args.max_backoff);
    backoff.max_attempts = args.max_attempts;
    let options = Options {
        backoff,
        ack_debounce: (!args.no_ack).then_some(Duration::from_secs(1)),
        client_name: concat!("agentwire-cli/", env!("CARGO_PKG_VERSION")).into(),
        ..Options::default()
    };
    let mut builder = Client::builder().url(&args.url).options(options);
    builder = match (args.token, args.token_command) {
        (_, Some(cmd)) => builder.token_provider(move || token_from_command(cmd.clone())),
        (Some(t), None) => builder.token(t),
        (None, None) => return Err("give --token or --token-command".into()),
    };
    for name in &args.channel {
        builder = if args.from_head {
            builder.channel_since(name, Since::Head)
        } else {
            builder.channel(name)
        };
    }
    let mut client = builder.connect()?;
    eprintln!("agentwire: connecting to {}", args.url);
    loop {
        let event = tokio::select! {
            ev = client.next() => ev,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("agentwire: interrupted; acknowledging and closing");
                for ev in client.close().await {
                    print_event(ev)?;
                }
                return Ok(());
            }
        };
        let Some(ev) = event else {
            return Err("the client stopped".into());
        };
        print_event(ev)?;
    }
}

/// Prints one client event: data on stdout, state on stderr; a fatal error
/// becomes the command's error.
fn print_event(ev: ClientEvent) -> Result<(), CliError> {
    match ev {
        ClientEvent::Event(e) => {
            let mut v = serde_json::to_value(&e)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), json!("event"));
            }
            println!("{v}");
        }
        ClientEvent::Message(m) => {
            // One line, like an event: the whole message, its data decoded
            // by its encoding (bytes stay base64, with the encoding named).
            println!(
                "{}",
                json!({"type": "message", "channel": m.channel, "id": m.id, "kind": m.kind,
                    "seq": m.seq, "encoding": m.encoding().as_str(), "data": m.data_json()})
            );
        }
        ClientEvent::MessageLost {
            channel,
            id,
            reason,
        } => {
            eprintln!(
                "agentwire: {channel}: message {id} is lost ({})",
                reason.as_str()
            );
            println!(
                "{}",
                json!({"type": "message_lost", "channel": channel, "id": id, "reason": reason.as_str()})
            );
        }
        ClientEvent::Gap { channel, from, to } => {
            eprintln!("agentwire: {channel}: seqs {from}..={to} are no longer retained");
            println!(
                "{}",
                json!({"type": "gap", "channel": channel, "from": from, "to": to})
            );
        }
        ClientEvent::Connected {
            protocol,
            connection_id,
        } => eprintln!("agentwire: connected (protocol v{protocol}, connection {connection_id})"),
        ClientEvent::Joined { channels } => {
            for c in channels {
                eprintln!(
                    "agentwire: joined {} (epoch {}, head {}, replaying {}{})",
                    c.name,
                    c.epoch,
                    c.head,
                    c.replayed,
                    if c.recovered {
                        ""
                    } else {
                        ", not fully recovered"
                    }
                );
            }
        }
        ClientEvent::Left { channels } => eprintln!("agentwire: left {}", channels.join(", ")),
        ClientEvent::Disconnected { reason } => eprintln!("agentwire: disconnected: {reason}"),
        ClientEvent::Reconnecting {
            attempt,
            delay,
            reason,
        } => eprintln!(
            "agentwire: reconnecting in {:.1}s (attempt {attempt}; {reason})",
            delay.as_secs_f64()
        ),
        ClientEvent::Error(e) if e.is_fatal() => return Err(e.into()),
        ClientEvent::Error(e) => eprintln!("agentwire: {e}"),
    }
    Ok(())
}

/// Runs `cmd` with `sh -c`; its trimmed stdout is the token.
async fn token_from_command(cmd: String) -> Result<String, TokenError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .await
        .map_err(|e| TokenError::new(format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(TokenError::new(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if token.is_empty() {
        return Err(TokenError::new(format!("{cmd:?} printed no token")));
    }
    Ok(token)
}
