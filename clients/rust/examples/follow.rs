//! Follows channels on a running agentwire gateway and prints what arrives.
//!
//! Against the local stack (`scripts/dev` in another terminal):
//!
//! ```sh
//! export AGENTWIRE_TOKEN=$(cargo run -q -p agentwire-cli -- token --tenant demo --sub me --channels 'demo*')
//! cargo run -p agentwire-client --example follow -- demo
//! # elsewhere: cargo run -q -p agentwire-cli -- publish --tenant demo --channel demo --kind hi --data '{"n":1}'
//! ```
//!
//! Stop or restart the gateway while it runs: it reconnects and resumes
//! from the last seq it printed. Ctrl-C acknowledges and closes.

use agentwire_client::{Client, ClientEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AGENTWIRE_URL").unwrap_or_else(|_| "ws://127.0.0.1:8080".into());
    let token = std::env::var("AGENTWIRE_TOKEN")
        .map_err(|_| "set AGENTWIRE_TOKEN (see `agentwire token --help`)")?;
    let channels: Vec<String> = std::env::args().skip(1).collect();
    if channels.is_empty() {
        return Err("name at least one channel: follow CHANNEL...".into());
    }
    let mut builder = Client::builder().url(&url).token(token);
    for c in &channels {
        builder = builder.channel(c);
    }
    let mut client = builder.connect()?;
    loop {
        let event = tokio::select! {
            ev = client.next() => ev,
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        };
        match event {
            Some(ClientEvent::Event(e)) => {
                println!("{} #{} {} {}", e.channel, e.seq, e.kind, e.data)
            }
            Some(ClientEvent::Gap { channel, from, to }) => {
                println!("{channel}: seqs {from}..={to} are gone")
            }
            Some(ClientEvent::Error(e)) if e.is_fatal() => return Err(e.into()),
            Some(other) => eprintln!("{other:?}"),
            None => return Ok(()),
        }
    }
}
