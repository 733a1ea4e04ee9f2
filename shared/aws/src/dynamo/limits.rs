//! [`RateLimiter`] and [`LimitSettings`] on the limits table (`pk` only):
//! a tenant's own limits on `tenant#<tenant>` (attribute `limits`, JSON
//! text), and one item per token bucket (`bucket#…`, attribute `tat`:
//! the theoretical arrival time in Unix microseconds, `expires_at` an hour
//! after it).
//!
//! A take of up to `want` tokens (an instance's lease, see
//! `agentwire_core::usecases::quotas`) is one conditional `UpdateItem`
//! when this instance guessed the bucket's state right (it keeps the last
//! `tat` it saw per bucket), two when not: an idle bucket is started
//! (`tat = now + granted × interval`, if still idle), a busy one advanced
//! (`tat = tat + granted × interval`, if the last of them is within the
//! burst tolerance). A failed condition returns the stored `tat` (or it is
//! read), and the take is decided again from it. Every write is
//! conditional, so concurrent instances never take more than the burst.

use std::collections::HashMap;
use std::sync::Mutex;

use agentwire_core::sync::lock;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use agentwire_core::limits::{Gcra, Rate, Step, Take, TenantLimits, wait_ms};
use agentwire_core::ports::{LimitSettings, RateLimiter, StoreError};

use super::item::{Item, get_n, get_s, n, s};
use crate::error::store_error;

/// Buckets whose last `tat` an instance remembers (then it starts over).
const HINTS: usize = 10_000;
/// Decisions tried before a contended take gives up (refused for one interval).
const ATTEMPTS: usize = 4;

/// Limits and token buckets in DynamoDB.
pub struct DynamoLimits {
    client: Client,
    table: String,
    hints: Mutex<HashMap<String, u64>>,
}

fn tenant_pk(tenant: &str) -> String {
    format!("tenant#{tenant}")
}

impl DynamoLimits {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            hints: Mutex::default(),
        }
    }

    fn hint(&self, bucket: &str) -> Option<u64> {
        lock(&self.hints).get(bucket).copied()
    }

    fn remember(&self, bucket: &str, tat: u64) {
        let mut hints = lock(&self.hints);
        if hints.len() >= HINTS {
            hints.clear();
        }
        hints.insert(bucket.to_owned(), tat);
    }

    /// Applies one step; `Ok(None)` when it applied, `Ok(Some(tat))` with
    /// the stored `tat` (`None` inside: no bucket) when its condition failed.
    async fn apply(
        &self,
        bucket: &str,
        step: Step,
        g: &Gcra,
        now: u64,
    ) -> Result<Option<Option<u64>>, StoreError> {
        let (expr, cond, new_tat) = match step {
            Step::Start { new_tat, .. } => (
                "SET tat = :new, expires_at = :exp",
                "attribute_not_exists(tat) OR tat <= :now",
                new_tat,
            ),
            Step::Advance { new_tat, .. } => (
                "SET tat = tat + :delta, expires_at = :exp",
                "tat > :now AND tat <= :ceiling",
                new_tat,
            ),
            Step::Refuse { .. } => return Ok(None),
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(bucket))
            .update_expression(expr)
            .condition_expression(cond)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(new_tat / 1_000_000 + 3600))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        req = match step {
            Step::Advance { granted, .. } => req
                .expression_attribute_values(":delta", n(g.interval_us * u64::from(granted)))
                .expression_attribute_values(":ceiling", n(g.advance_ceiling(now, granted))),
            _ => req.expression_attribute_values(":new", n(new_tat)),
        };
        match req.send().await {
            Ok(_) => {
                self.remember(bucket, new_tat);
                Ok(None)
            }
            Err(e) => {
                let Some(se) = e.as_service_error() else {
                    return Err(store_error("take from bucket", e));
                };
                if !se.is_conditional_check_failed_exception() {
                    return Err(store_error("take from bucket", e));
                }
                let returned = match se {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        c.item().map(|i| get_n(i, "tat"))
                    }
                    _ => None,
                };
                let tat = match returned {
                    Some(tat) => tat,
                    None => self.read_tat(bucket).await?,
                };
                Ok(Some(tat))
            }
        }
    }

    async fn read_tat(&self, bucket: &str) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(bucket))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("read bucket", e))?;
        Ok(out.item().and_then(|i: &Item| get_n(i, "tat")))
    }
}

#[async_trait]
impl RateLimiter for DynamoLimits {
    async fn take(
        &self,
        bucket: &str,
        rate: Rate,
        want: u32,
        now_us: u64,
    ) -> Result<Take, StoreError> {
        let g = rate.gcra();
        let mut tat = self.hint(bucket);
        for _ in 0..ATTEMPTS {
            let step = g.step_n(tat, now_us, want);
            let granted = match step {
                Step::Refuse { wait_us } => {
                    return Ok(Take::Limited {
                        retry_after_ms: wait_ms(wait_us),
                    });
                }
                Step::Start { granted, .. } | Step::Advance { granted, .. } => granted,
            };
            match self.apply(bucket, step, &g, now_us).await? {
                None => return Ok(Take::Granted(granted)),
                Some(stored) => {
                    tat = stored;
                    if let Some(t) = stored {
                        self.remember(bucket, t);
                    }
                }
            }
        }
        // Contended past every attempt: as good as full.
        Ok(Take::Limited {
            retry_after_ms: wait_ms(g.interval_us),
        })
    }
}

#[async_trait]
impl LimitSettings for DynamoLimits {
    async fn get(&self, tenant: &str) -> Result<Option<TenantLimits>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant_pk(tenant)))
            .send()
            .await
            .map_err(|e| store_error("get limits", e))?;
        match out.item().and_then(|i| get_s(i, "limits")) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::failed("read limits", e)),
        }
    }

    async fn put(&self, tenant: &str, limits: &TenantLimits) -> Result<(), StoreError> {
        let text =
            serde_json::to_string(limits).map_err(|e| StoreError::failed("write limits", e))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant_pk(tenant)))
            .item("limits", s(text))
            .send()
            .await
            .map_err(|e| store_error("put limits", e))?;
        Ok(())
    }

    async fn clear(&self, tenant: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(tenant_pk(tenant)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error("clear limits", e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }
}
