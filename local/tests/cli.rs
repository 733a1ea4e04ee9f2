//! The dev gateway refuses to listen beyond loopback with the well-known
//! default token key (anyone could mint tokens with it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn a_non_loopback_host_with_the_default_key_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire-local"))
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env_remove("AGENTWIRE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("well-known default") && stderr.contains("AGENTWIRE_JWT_SECRET"),
        "{stderr}"
    );
}
