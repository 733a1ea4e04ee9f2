//! [`TrustStore`] and [`Revocations`] on the limits table (`pk` only), the
//! home of each tenant's settings:
//! - `issuer#<iss>`: one trusted issuer; `owner` (the tenant, or `*` for a
//!   deployment-level issuer) and `entry` (the trust entry, JSON text). A
//!   put is conditional on the owner, so an issuer belongs to one tenant.
//! - `revoked#<tenant>#<sub>`: `at_ms`, tokens of `sub` issued before it
//!   are refused; `tenant`, `sub`.
//!
//! Listing a tenant's issuers or revocations scans the table (an
//! operator's or tenant admin's call, never on a hot path); a token's check
//! is one `GetItem` each.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use agentwire_core::auth::trust::TrustEntry;
use agentwire_core::ports::{Revocation, Revocations, StoreError, TrustStore};

use super::item::{Item, get_n, get_s, n, s};
use crate::error::store_error;

/// The owner recorded for a deployment-level issuer (never a tenant name).
const DEPLOYMENT_OWNER: &str = "*";

fn issuer_pk(iss: &str) -> String {
    format!("issuer#{iss}")
}

fn revoked_pk(tenant: &str, sub: &str) -> String {
    format!("revoked#{tenant}#{sub}")
}

fn owner(tenant: Option<&str>) -> &str {
    tenant.unwrap_or(DEPLOYMENT_OWNER)
}

/// Trust entries and revocations in DynamoDB.
pub struct DynamoIdentity {
    client: Client,
    table: String,
}

impl DynamoIdentity {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn scan(
        &self,
        op: &'static str,
        filter: &str,
        values: &[(&str, String)],
    ) -> Result<Vec<Item>, StoreError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(filter);
        for (k, v) in values {
            req = req.expression_attribute_values(*k, s(v.clone()));
        }
        req.into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| store_error(op, e))
    }
}

fn entry_of(item: &Item) -> Result<TrustEntry, StoreError> {
    let text = get_s(item, "entry").unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| StoreError::failed("read trust entry", e))
}

#[async_trait]
impl TrustStore for DynamoIdentity {
    async fn issuer(&self, iss: &str) -> Result<Option<TrustEntry>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(issuer_pk(iss)))
            .send()
            .await
            .map_err(|e| store_error("get trust entry", e))?;
        out.item.as_ref().map(entry_of).transpose()
    }

    async fn put_issuer(&self, entry: &TrustEntry) -> Result<bool, StoreError> {
        let text =
            serde_json::to_string(entry).map_err(|e| StoreError::failed("put trust entry", e))?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(issuer_pk(&entry.issuer)))
            .item("owner", s(owner(entry.tenant())))
            .item("entry", s(text))
            .condition_expression("attribute_not_exists(pk) OR #o = :o")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":o", s(owner(entry.tenant())))
            .send()
            .await;
        Ok(super::condition_held("put trust entry", res)?.is_some())
    }

    async fn issuers_of(&self, tenant: Option<&str>) -> Result<Vec<TrustEntry>, StoreError> {
        let items = self
            .scan(
                "list trust entries",
                "begins_with(pk, :p)",
                &[(":p", "issuer#".into())],
            )
            .await?;
        let mut entries: Vec<TrustEntry> = items
            .iter()
            .filter(|i| get_s(i, "owner").as_deref() == Some(owner(tenant)))
            .map(entry_of)
            .collect::<Result<_, _>>()?;
        entries.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        Ok(entries)
    }

    async fn remove_issuer(&self, tenant: Option<&str>, iss: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(issuer_pk(iss)))
            .condition_expression("#o = :o")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":o", s(owner(tenant)))
            .send()
            .await;
        Ok(super::condition_held("remove trust entry", res)?.is_some())
    }
}

#[async_trait]
impl Revocations for DynamoIdentity {
    async fn revoked_at(&self, tenant: &str, sub: &str) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(revoked_pk(tenant, sub)))
            .projection_expression("at_ms")
            .send()
            .await
            .map_err(|e| store_error("get revocation", e))?;
        Ok(out.item.as_ref().and_then(|i| get_n(i, "at_ms")))
    }

    async fn revoke(&self, tenant: &str, sub: &str, at_ms: u64) -> Result<(), StoreError> {
        // Never moves back: a later revocation wins.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(revoked_pk(tenant, sub)))
            .update_expression("SET at_ms = :a, tenant = :t, #s = :s")
            .condition_expression("attribute_not_exists(at_ms) OR at_ms < :a")
            .expression_attribute_names("#s", "sub")
            .expression_attribute_values(":a", n(at_ms))
            .expression_attribute_values(":t", s(tenant))
            .expression_attribute_values(":s", s(sub))
            .send()
            .await;
        super::condition_held("revoke", res)?;
        Ok(())
    }

    async fn revocations(&self, tenant: &str) -> Result<Vec<Revocation>, StoreError> {
        let prefix = format!("revoked#{tenant}#");
        let items = self
            .scan("list revocations", "begins_with(pk, :p)", &[(":p", prefix)])
            .await?;
        let mut out: Vec<Revocation> = items
            .iter()
            .filter(|i| get_s(i, "tenant").as_deref() == Some(tenant))
            .filter_map(|i| {
                Some(Revocation {
                    tenant: tenant.to_owned(),
                    sub: get_s(i, "sub")?,
                    at_ms: get_n(i, "at_ms")?,
                })
            })
            .collect();
        out.sort_by(|a, b| a.sub.cmp(&b.sub));
        Ok(out)
    }
}
