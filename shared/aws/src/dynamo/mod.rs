//! DynamoDB adapters, one file per port, and the one place that knows the
//! table layout.
//!
//! Items (tables are named in [`agentwire_core::config::Tables`]):
//! - connections: `pk` = connection id; tenant, principal, grants, publish,
//!   protocol, connected_at, expires_at (TTL), token_exp, channels (string set).
//! - subscriptions: `pk` = tenant#channel, `sk` = connection id; principal,
//!   token_exp, joined_at, expires_at (TTL).
//! - channels: `pk` = tenant#channel; head, epoch, created_at, retention_s,
//!   webhook (JSON text). The tenant default webhook is on `tenant#*`.
//! - events: `pk` = tenant#channel, `sk` = seq; id, kind, data (JSON text),
//!   ts, epoch, committed_at, expires_at (TTL). Beside them, one dedup item
//!   per event id: `pk` = tenant#channel#id, `sk` = 0, holding the seq.
//! - cursors: `pk` = tenant#principal, `sk` = channel; seq, updated_at,
//!   expires_at (TTL).
//! - connections (counts): `pk` = `#count#tenant`; n, the tenant's counted
//!   connections (`counted` on the connection's item).
//! - limits: `pk` = `tenant#tenant` (limits, JSON text) or `bucket#…`
//!   (tat, expires_at (TTL)); the tenants' identity settings beside them:
//!   `issuer#iss` (owner, entry: a trust entry, JSON text) and
//!   `revoked#tenant#sub` (at_ms).
//!
//! TTL deletes late, so every read here filters expired items itself, at
//! the time of the adapter's [`Clock`](agentwire_core::clock::Clock).

mod cursors;
mod identity;
pub mod item;
mod limits;
mod log;
mod registry;
mod webhooks;

pub use cursors::{CURSOR_TTL_S, DynamoCursors};
pub use identity::DynamoIdentity;
pub use item::{FromItem, Item, ToItem};
pub use limits::DynamoLimits;
pub use log::DynamoLog;
pub use registry::{DynamoRegistry, PRESENCE_SK};
pub use webhooks::DynamoWebhooks;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use agentwire_core::ports::StoreError;

use crate::error::store_error;

/// A conditional write's result (`PutItem`, `UpdateItem`, `DeleteItem`):
/// `Some(output)` when it applied, `None` when its condition did not hold,
/// the mapped error otherwise.
fn condition_held<T, E>(
    op: &'static str,
    res: Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
) -> Result<Option<T>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match res {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(store_error(op, e)),
    }
}

/// Puts `items` into `table` with `BatchWriteItem`, 25 at a time, resending
/// what comes back unprocessed (up to 8 rounds per batch): the bulk loads
/// of benchmarks and tests, never a path whose writes must be conditional.
async fn put_all(
    client: &Client,
    table: &str,
    op: &'static str,
    items: impl IntoIterator<Item = Item>,
) -> Result<(), StoreError> {
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let mut writes = Vec::with_capacity(25);
        for item in items.by_ref().take(25) {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| build_error(op, e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        let mut pending = HashMap::from([(table.to_owned(), writes)]);
        for _ in 0..8 {
            let out = client
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| store_error(op, e))?;
            pending = out.unprocessed_items.unwrap_or_default();
            if pending.values().all(Vec::is_empty) {
                break;
            }
        }
        if !pending.values().all(Vec::is_empty) {
            return Err(StoreError::Unavailable {
                op,
                reason: "items stayed unprocessed after 8 attempts".into(),
            });
        }
    }
    Ok(())
}

fn build_error(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(op, format!("request could not be built: {e}"))
}
