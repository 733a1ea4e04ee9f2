//! The port contract tests of `agentwire-core` against the DynamoDB
//! adapters on the local endpoint, with a clock the test moves: the same
//! cases the in-memory fakes pass (TTL filtering, conditional failures,
//! paging, racing token-bucket takes), so the fakes cannot drift from the
//! adapters.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentwire_aws::{DynamoCursors, DynamoLog, DynamoRegistry, DynamoWebhooks};
use agentwire_core::clock::ManualClock;
use agentwire_core::contract;
use agentwire_e2e::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_adapters_keep_the_port_contracts() {
    let stack = Stack::start().await;
    let tables = stack.config.tables.clone();
    let ns = stack.tenant.clone();

    let clock = Arc::new(ManualClock::new());
    let registry = DynamoRegistry::new(stack.ddb(), tables.clone(), clock.clone());
    contract::connection_registry(&registry, &clock, &ns).await;
    contract::counted_connections(&registry, &format!("{ns}-counted")).await;
    contract::token_updates(&registry, &ns).await;
    contract::channel_claims(&registry, &ns).await;

    // Trusted issuers and revocations on the limits table.
    let identity = agentwire_aws::DynamoIdentity::new(stack.ddb(), tables.limits.clone());
    contract::trust_store(&identity, &ns).await;
    contract::revocations(&identity, &ns).await;

    // Token buckets (single and chunked takes, racing writers) and the
    // tenants' limits on the limits table.
    contract::rate_limiter(&stack.limits(), &ns).await;

    let clock = Arc::new(ManualClock::new());
    let log = DynamoLog::new(stack.ddb(), tables.clone(), clock.clone());
    contract::channel_log(&log, &clock, &ns).await;

    let clock = Arc::new(ManualClock::new());
    let cursors = DynamoCursors::new(stack.ddb(), tables.clone(), clock.clone());
    contract::cursor_store(&cursors, &clock, &ns).await;

    let clock = Arc::new(ManualClock::new());
    let webhooks = DynamoWebhooks::new(stack.ddb(), tables, clock.clone()).with_secrets();
    contract::webhooks(&webhooks, &clock, &ns).await;
    contract::receiver_holds(&webhooks, &ns).await;

    stack.shutdown().await;
}
