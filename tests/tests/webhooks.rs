//! Webhook configuration as durable channel state, on the local stack's
//! tables: set, read back by a fresh client, rotate with a grace period,
//! tenant default vs channel, refusal of private addresses, removal.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::adapters::DynamoWebhooks;
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::model::ChannelKey;
use agentwire_core::usecases::{WebhookAdmin, WebhookAdminError};
use agentwire_core::webhook::{
    UrlPolicy, UrlRefusal, WebhookMode, WebhookScope, signature::signature_header,
};
use agentwire_e2e::Stack;

fn admin(stack: &Stack, policy: UrlPolicy) -> WebhookAdmin {
    let store = DynamoWebhooks::new(stack.ddb(), stack.config.tables.clone());
    WebhookAdmin::new(Arc::new(store), policy, Arc::new(SystemClock))
}

fn local_policy() -> UrlPolicy {
    UrlPolicy {
        allow_insecure_loopback: true,
        allow_hosts: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_durable_state_read_for_every_event_until_removed() {
    let stack = Stack::start().await;
    let key = ChannelKey::new(&stack.tenant, "agent-9");
    let channel = WebhookScope::Channel(key.clone());
    let tenant = WebhookScope::TenantDefault(stack.tenant.clone());
    let a = admin(&stack, local_policy());

    a.set(
        &tenant,
        "http://127.0.0.1:9/default",
        WebhookMode::Fallback,
        None,
    )
    .await
    .unwrap();
    let set = a
        .set(
            &channel,
            "http://127.0.0.1:9/hook",
            WebhookMode::Fallback,
            None,
        )
        .await
        .unwrap();
    // Read back through a fresh client: it is state, not a one-shot token.
    for _ in 0..3 {
        let seen = admin(&stack, local_policy())
            .effective(&key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, set);
    }
    // Setting a webhook never disturbs the channel's log.
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    let joined = c.join(serde_json::json!(["agent-9"])).await;
    assert_eq!(joined["channels"][0]["head"], 0, "{joined}");

    // Rotation: both secrets sign during the grace period.
    let rotated = a.rotate(&channel, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        rotated.previous_secret.as_deref(),
        Some(set.secret.as_str())
    );
    let now = SystemClock.epoch_s();
    let secrets = rotated.signing_secrets(now).unwrap();
    let header = signature_header(&secrets, "evt-1", now, b"{}");
    assert_eq!(header.matches("v1,").count(), 2);
    for s in &secrets {
        assert!(s.verify("evt-1", now, b"{}", &header));
    }

    // Removing the channel's webhook falls back to the tenant default.
    a.remove(&channel).await.unwrap();
    assert_eq!(
        a.effective(&key).await.unwrap().unwrap().url,
        "http://127.0.0.1:9/default"
    );
    a.remove(&tenant).await.unwrap();
    assert!(a.effective(&key).await.unwrap().is_none());
    assert!(matches!(
        a.get(&channel).await,
        Err(WebhookAdminError::NotFound(_))
    ));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_link_local_and_metadata_urls_are_refused_when_set() {
    let stack = Stack::start().await;
    let scope = WebhookScope::Channel(ChannelKey::new(&stack.tenant, "ops"));
    let strict = admin(&stack, UrlPolicy::default());
    for url in [
        "https://10.0.0.8/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
    ] {
        let err = strict
            .set(&scope, url, WebhookMode::Always, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, WebhookAdminError::Url(UrlRefusal::Forbidden { .. })),
            "{url}: {err}"
        );
    }
    let err = strict
        .set(&scope, "http://127.0.0.1:9/hook", WebhookMode::Always, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WebhookAdminError::Url(UrlRefusal::Insecure)),
        "{err}"
    );
    assert!(
        matches!(
            strict.get(&scope).await,
            Err(WebhookAdminError::NotFound(_))
        ),
        "nothing stored"
    );
    stack.shutdown().await;
}
