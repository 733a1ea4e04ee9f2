//! The deployment's token keys come from Secrets Manager at cold start (the
//! local endpoint's), one key or several with their kids, and a key's text
//! never reaches an error.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_core::auth::TokenKey;
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::config::Config;
use agentwire_core::usecases::ConnectRequest;
use agentwire_e2e::Stack;

async fn secret(stack: &Stack, name: &str, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(&stack.sdk)
        .create_secret()
        .name(format!("{}-{name}", stack.tenant))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("an ARN")
}

fn config_for(stack: &Stack, id: String) -> Config {
    Config {
        jwt_secret: None,
        jwt_secret_id: Some(id),
        ..stack.config.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_keys_come_from_secrets_manager() {
    let stack = Stack::start().await;
    let (new, old) = ("n".repeat(40), "o".repeat(40));
    let arn = secret(
        &stack,
        "keys",
        &format!(r#"{{"keys":[{{"kid":"2026-12","secret":"{new}"}},{{"kid":"2026-11","secret":"{old}"}}]}}"#),
    )
    .await;
    let mut config = config_for(&stack, arn);
    agentwire_aws::secrets::resolve_jwt_keys(&stack.sdk, &mut config)
        .await
        .unwrap();
    let deps =
        agentwire_aws::Deps::with_clock(&stack.sdk, stack.ddb(), config, stack.clock.clone());
    assert_eq!(
        deps.keyring().unwrap().signer().and_then(|k| k.kid()),
        Some("2026-12"),
        "the first key signs"
    );
    let connect = deps.connect().unwrap();
    let now = SystemClock.epoch_s();
    for (i, (kid, key)) in [("2026-12", &new), ("2026-11", &old)]
        .into_iter()
        .enumerate()
    {
        let claims = TokenKey::claims(
            &stack.tenant,
            "ana",
            vec!["a-*".into()],
            vec![],
            now,
            Duration::from_secs(60),
        );
        let token = TokenKey::hs256(key.as_bytes())
            .with_kid(kid)
            .sign(&claims)
            .unwrap();
        let accepted = connect
            .connect(&ConnectRequest {
                connection_id: format!("{}-c{i}", stack.tenant),
                authorization: Some(format!("Bearer {token}")),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!(accepted.connection.tenant, stack.tenant);
    }

    // One key, as the template generates it.
    let plain = "p".repeat(64);
    let mut one = config_for(&stack, secret(&stack, "plain", &plain).await);
    agentwire_aws::secrets::resolve_jwt_keys(&stack.sdk, &mut one)
        .await
        .unwrap();
    assert_eq!(one.jwt_secret.as_deref(), Some(plain.as_bytes()));

    // Refusals name the secret, never a key.
    let mut short = config_for(
        &stack,
        secret(
            &stack,
            "short",
            r#"{"keys":[{"kid":"x","secret":"hunter2-is-short"}]}"#,
        )
        .await,
    );
    let e = agentwire_aws::secrets::resolve_jwt_keys(&stack.sdk, &mut short)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AGENTWIRE_JWT_SECRET_ID") && !e.contains("hunter2"),
        "{e}"
    );
    let mut missing = config_for(&stack, format!("{}-nope", stack.tenant));
    let e = agentwire_aws::secrets::resolve_jwt_keys(&stack.sdk, &mut missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the secret"), "{e}");
    stack.shutdown().await;
}
