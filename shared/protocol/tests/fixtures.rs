//! Every JSON fixture reads into the typed frame and writes back to the same JSON.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use agentwire_protocol::{ClientFrame, ServerFrame, parse_client_frame};
use serde_json::Value;

fn fixtures(dir: &str) -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn client_fixtures_round_trip() {
    let all = fixtures("client");
    assert_eq!(all.len(), 6, "one fixture per client action");
    for (path, text) in all {
        let frame: ClientFrame =
            parse_client_frame(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let back: Value = serde_json::to_value(&frame).unwrap();
        let orig: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, orig, "{path}");
    }
}

#[test]
fn server_fixtures_round_trip() {
    let all = fixtures("server");
    assert_eq!(all.len(), 12, "one fixture per server frame shape");
    for (path, text) in all {
        let frame: ServerFrame =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let back: Value = serde_json::from_str(&frame.to_json()).unwrap();
        let orig: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, orig, "{path}");
    }
}
