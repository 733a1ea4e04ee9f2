//! Quotas: what each tenant may do, checked before a request is taken.
//! One piece for every entry point: publish (tenant and channel rates),
//! the HTTP reads (the tenant's read rate), `$connect` (concurrent
//! connections), join and ack (the connection's action rate, the channels
//! it may join). A tenant in dry-run is never
//! refused; what would have been is logged and counted.
//!
//! The limits are read once per tenant every `cache_for` (10 s by
//! default) per instance; a tenant with no limits costs nothing more. A
//! limits store that fails lets the request through (logged): a quota
//! never makes the gateway lose availability.
//!
//! Tokens are leased: an instance takes a chunk from the shared bucket in
//! one write ([`lease_size`]: a twentieth of a second of the rate, at
//! most half the burst) and spends it locally for up to
//! [`LEASE_FOR_US`], so a busy bucket costs one write per chunk, not per
//! request. Every token spent was taken from the shared bucket under its
//! conditional write, so no more than the bucket allows is ever let
//! through; leasing only shifts when a token is spent, by at most a
//! second. A slow bucket (under 40 a second) leases one token at a time, exactly as
//! without leasing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::limits::{
    LEASE_FOR_US, Rate, Scope, Take, TenantLimits, channel_bucket, connection_bucket, lease_size,
    read_bucket, tenant_bucket,
};
use crate::metrics;
use crate::ports::{LimitSettings, RateLimiter};
use crate::sync::lock;

/// A refusal by a quota: which one and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the {} limit; retry after {retry_after_ms} ms", scope.as_str())]
pub struct Limited {
    pub scope: Scope,
    pub retry_after_ms: u64,
}

/// The quota checks, over the limits store and the shared token buckets.
pub struct Quotas {
    settings: Arc<dyn LimitSettings>,
    limiter: Arc<dyn RateLimiter>,
    defaults: TenantLimits,
    clock: Arc<dyn Clock>,
    cache_for: Duration,
    cache: Mutex<HashMap<String, (TenantLimits, std::time::SystemTime)>>,
    leases: Mutex<HashMap<String, Lease>>,
}

/// Tokens this instance took from a shared bucket and has not spent yet.
#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    /// Unix microseconds after which the tokens left are dropped.
    until_us: u64,
}

/// Tenants whose limits (and buckets whose leases) one instance keeps at
/// most (then it starts over).
const CACHE_TENANTS: usize = 10_000;

impl Quotas {
    pub fn new(
        settings: Arc<dyn LimitSettings>,
        limiter: Arc<dyn RateLimiter>,
        defaults: TenantLimits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            settings,
            limiter,
            defaults,
            clock,
            cache_for: Duration::from_secs(10),
            cache: Mutex::default(),
            leases: Mutex::default(),
        }
    }

    /// How long a tenant's limits are kept before they are read again.
    pub fn with_cache_for(mut self, cache_for: Duration) -> Self {
        self.cache_for = cache_for;
        self
    }

    /// The tenant's effective limits: its own over the defaults.
    pub async fn limits(&self, tenant: &str) -> TenantLimits {
        let now = self.clock.now();
        if let Some((l, at)) = lock(&self.cache).get(tenant)
            && now.duration_since(*at).unwrap_or_default() < self.cache_for
        {
            return l.clone();
        }
        let own = match self.settings.get(tenant).await {
            Ok(own) => own.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "limits unreadable; the defaults apply");
                TenantLimits::default()
            }
        };
        let limits = own.over(&self.defaults);
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_TENANTS {
            cache.clear();
        }
        cache.insert(tenant.to_owned(), (limits.clone(), now));
        limits
    }

    /// The tenant's and the channel's publish rates (both taken at once).
    pub async fn check_publish(&self, tenant: &str, channel: &str) -> Result<(), Limited> {
        let limits = self.limits(tenant).await;
        let tenant_take = self.take(
            Scope::Tenant,
            tenant_bucket(tenant),
            limits.publish(),
            tenant,
        );
        let channel_take = self.take(
            Scope::Channel,
            channel_bucket(tenant, channel),
            limits.channel_publish(),
            tenant,
        );
        let (t, c) = futures::join!(tenant_take, channel_take);
        let refused = [t, c]
            .into_iter()
            .flatten()
            .max_by_key(|l| l.retry_after_ms);
        self.decide(&limits, tenant, refused)
    }

    /// The connection's join/ack rate.
    pub async fn check_action(&self, tenant: &str, connection_id: &str) -> Result<(), Limited> {
        self.check_one(
            tenant,
            Scope::Connection,
            connection_bucket(connection_id),
            TenantLimits::connection_actions,
        )
        .await
    }

    /// The tenant's HTTP read rate (history, presence, a channel's state).
    pub async fn check_read(&self, tenant: &str) -> Result<(), Limited> {
        self.check_one(
            tenant,
            Scope::Read,
            read_bucket(tenant),
            TenantLimits::reads,
        )
        .await
    }

    /// One take from `bucket` at the tenant's `rate`, decided (dry run
    /// included).
    async fn check_one(
        &self,
        tenant: &str,
        scope: Scope,
        bucket: String,
        rate: fn(&TenantLimits) -> Option<Rate>,
    ) -> Result<(), Limited> {
        let limits = self.limits(tenant).await;
        let refused = self.take(scope, bucket, rate(&limits), tenant).await;
        self.decide(&limits, tenant, refused)
    }

    /// Counts a refusal by a quota that is not a rate (`connections`,
    /// `channels`): `Err` to refuse, `Ok` when the tenant is in dry-run.
    pub fn over_quota(
        &self,
        limits: &TenantLimits,
        tenant: &str,
        scope: Scope,
    ) -> Result<(), Limited> {
        self.decide(
            limits,
            tenant,
            Some(Limited {
                scope,
                retry_after_ms: 0,
            }),
        )
    }

    fn decide(
        &self,
        limits: &TenantLimits,
        tenant: &str,
        refused: Option<Limited>,
    ) -> Result<(), Limited> {
        let Some(l) = refused else {
            return Ok(());
        };
        if limits.is_dry_run() {
            tracing::info!(%tenant, scope = l.scope.as_str(), retry_after_ms = l.retry_after_ms, "dry run: would be limited");
            ::metrics::counter!(metrics::RATE_LIMITED_DRY_RUN, "scope" => l.scope.as_str())
                .increment(1);
            return Ok(());
        }
        tracing::info!(%tenant, scope = l.scope.as_str(), retry_after_ms = l.retry_after_ms, "limited");
        ::metrics::counter!(metrics::RATE_LIMITED, "scope" => l.scope.as_str()).increment(1);
        Err(l)
    }

    /// One take, `Some` when refused; a failing limiter lets it through.
    async fn take(
        &self,
        scope: Scope,
        bucket: String,
        rate: Option<Rate>,
        tenant: &str,
    ) -> Option<Limited> {
        let rate = rate?;
        let now = self.clock.epoch_us();
        if self.spend_leased(&bucket, now) {
            return None;
        }
        match self
            .limiter
            .take(&bucket, rate, lease_size(rate), now)
            .await
        {
            Ok(Take::Granted(granted)) => {
                self.lease(bucket, granted.saturating_sub(1), now);
                None
            }
            Ok(Take::Limited { retry_after_ms }) => Some(Limited {
                scope,
                retry_after_ms,
            }),
            Err(e) => {
                tracing::warn!(%tenant, scope = scope.as_str(), error = %e, "rate limiter unavailable; let through");
                None
            }
        }
    }

    /// Spends one leased token of `bucket`, if a live lease has one.
    fn spend_leased(&self, bucket: &str, now: u64) -> bool {
        let mut leases = lock(&self.leases);
        match leases.get_mut(bucket) {
            Some(l) if l.left > 0 && now <= l.until_us => {
                l.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps `left` tokens just taken from `bucket` (beside any still live).
    fn lease(&self, bucket: String, left: u32, now: u64) {
        if left == 0 {
            return;
        }
        let mut leases = lock(&self.leases);
        if leases.len() >= CACHE_TENANTS && !leases.contains_key(&bucket) {
            leases.clear();
        }
        let held = leases
            .get(&bucket)
            .filter(|l| now <= l.until_us)
            .map_or(0, |l| l.left);
        leases.insert(
            bucket,
            Lease {
                left: held.saturating_add(left),
                until_us: now + LEASE_FOR_US,
            },
        );
    }
}

/// What the operator sees of a tenant's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// The tenant's own settings (empty: none).
    pub own: TenantLimits,
    /// What applies: its own over the deployment's defaults.
    pub effective: TenantLimits,
    /// Its counted connections now.
    pub connections: u64,
}

/// The operator's `agentwire tenant`: a tenant's own limits, set field by
/// field, shown with what applies, cleared (with its connection count).
pub struct TenantAdmin {
    settings: Arc<dyn LimitSettings>,
    registry: Arc<dyn crate::ports::ConnectionRegistry>,
    defaults: TenantLimits,
}

impl TenantAdmin {
    pub fn new(
        settings: Arc<dyn LimitSettings>,
        registry: Arc<dyn crate::ports::ConnectionRegistry>,
        defaults: TenantLimits,
    ) -> Self {
        Self {
            settings,
            registry,
            defaults,
        }
    }

    pub async fn get(&self, tenant: &str) -> Result<TenantView, crate::ports::StoreError> {
        let own = self.settings.get(tenant).await?.unwrap_or_default();
        Ok(TenantView {
            effective: own.over(&self.defaults),
            connections: self.registry.counted_connections(tenant).await?,
            own,
        })
    }

    /// Sets the fields `change` has, keeping the tenant's others.
    pub async fn set(
        &self,
        tenant: &str,
        change: &TenantLimits,
    ) -> Result<TenantView, crate::ports::StoreError> {
        let own = self.settings.get(tenant).await?.unwrap_or_default();
        self.settings.put(tenant, &change.over(&own)).await?;
        self.get(tenant).await
    }

    /// Removes the tenant's own limits (the defaults apply) and sets its
    /// connection count to zero (the remedy for a count a lost
    /// `$disconnect` left high); `false` when it had no limits of its own.
    pub async fn clear(&self, tenant: &str) -> Result<bool, crate::ports::StoreError> {
        let had = self.settings.clear(tenant).await?;
        self.registry.reset_connection_count(tenant).await?;
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::memory::MemoryLimits;
    use std::sync::atomic::Ordering;

    fn quotas(defaults: TenantLimits) -> (Quotas, Arc<MemoryLimits>, Arc<ManualClock>) {
        let store = Arc::new(MemoryLimits::default());
        let clock = Arc::new(ManualClock::new());
        (
            Quotas::new(store.clone(), store.clone(), defaults, clock.clone()),
            store,
            clock,
        )
    }

    #[tokio::test]
    async fn a_tenant_over_its_burst_is_limited_and_another_is_not() {
        let (q, store, clock) = quotas(TenantLimits::default());
        store
            .put(
                "slow",
                &TenantLimits {
                    publish_rate: Some(5),
                    publish_burst: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut ok = 0;
        let mut refused = vec![];
        for _ in 0..50 {
            match q.check_publish("slow", "a").await {
                Ok(()) => ok += 1,
                Err(l) => refused.push(l),
            }
        }
        assert_eq!(ok, 10);
        assert!(
            refused
                .iter()
                .all(|l| l.scope == Scope::Tenant && l.retry_after_ms == 200)
        );
        for _ in 0..50 {
            q.check_publish("fast", "a").await.unwrap();
        }
        clock.advance(Duration::from_millis(200));
        q.check_publish("slow", "a").await.unwrap();
    }

    #[tokio::test]
    async fn the_channel_rate_applies_per_channel() {
        let (q, _, _) = quotas(TenantLimits {
            channel_publish_rate: Some(1),
            channel_publish_burst: Some(2),
            ..Default::default()
        });
        q.check_publish("t", "a").await.unwrap();
        q.check_publish("t", "a").await.unwrap();
        let l = q.check_publish("t", "a").await.unwrap_err();
        assert_eq!(l.scope, Scope::Channel);
        assert_eq!(l.retry_after_ms, 1000);
        q.check_publish("t", "b").await.unwrap();
    }

    #[tokio::test]
    async fn dry_run_refuses_nothing() {
        let (q, _, _) = quotas(TenantLimits {
            publish_rate: Some(1),
            publish_burst: Some(1),
            dry_run: Some(true),
            ..Default::default()
        });
        for _ in 0..5 {
            q.check_publish("t", "a").await.unwrap();
        }
        let l = q.limits("t").await;
        q.over_quota(&l, "t", Scope::Connections).unwrap();
    }

    #[tokio::test]
    async fn a_tenant_without_limits_costs_one_read_per_cache_period() {
        let (q, store, clock) = quotas(TenantLimits::default());
        for _ in 0..20 {
            q.check_publish("t", "a").await.unwrap();
            q.check_action("t", "c1").await.unwrap();
        }
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            1,
            "one settings read, no take"
        );
        clock.advance(Duration::from_secs(11));
        q.check_publish("t", "a").await.unwrap();
        assert_eq!(store.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_operator_sets_fields_one_by_one_and_clears_them() {
        let store = Arc::new(MemoryLimits::default());
        let reg = Arc::new(crate::memory::MemoryRegistry::default());
        let admin = TenantAdmin::new(
            store,
            reg,
            TenantLimits {
                max_connections: Some(100),
                ..Default::default()
            },
        );
        let v = admin
            .set(
                "t",
                &TenantLimits {
                    publish_rate: Some(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(v.own.publish_rate, Some(5));
        assert_eq!(v.effective.max_connections, Some(100));
        let v = admin
            .set(
                "t",
                &TenantLimits {
                    publish_burst: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (v.own.publish_rate, v.own.publish_burst),
            (Some(5), Some(10)),
            "the earlier field is kept"
        );
        assert!(admin.clear("t").await.unwrap());
        assert!(admin.get("t").await.unwrap().own.is_empty());
        assert!(!admin.clear("t").await.unwrap());
    }

    #[tokio::test]
    async fn own_limits_are_seen_after_the_cache_period() {
        let (q, store, clock) = quotas(TenantLimits::default());
        q.check_action("t", "c1").await.unwrap();
        store
            .put(
                "t",
                &TenantLimits {
                    connection_action_rate: Some(1),
                    connection_action_burst: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(10));
        q.check_action("t", "c1").await.unwrap();
        let l = q.check_action("t", "c1").await.unwrap_err();
        assert_eq!(l.scope, Scope::Connection);
        q.check_action("t", "c2").await.unwrap();
    }

    #[tokio::test]
    async fn a_busy_bucket_is_leased_in_chunks_and_never_past_its_burst() {
        let (q, store, clock) = quotas(TenantLimits {
            publish_rate: Some(1000),
            ..Default::default()
        });
        // 1000/s: leases of 50. The burst of 1000 at one instant: exactly 1000.
        let mut ok = 0;
        for _ in 0..1500 {
            if q.check_publish("t", "a").await.is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1000);
        let calls = store.calls.load(Ordering::SeqCst);
        // One settings read, 20 chunks of 50, and one refused take per
        // publish past the burst.
        assert_eq!(calls, 1 + 20 + 500);
        // A second later the bucket has refilled by 1000: 50 a write again.
        clock.advance(Duration::from_secs(1));
        let before = store.calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            q.check_publish("t", "a").await.unwrap();
        }
        assert_eq!(store.calls.load(Ordering::SeqCst) - before, 2);
    }

    #[tokio::test]
    async fn leased_tokens_left_unspent_expire() {
        let (q, store, clock) = quotas(TenantLimits {
            publish_rate: Some(1000),
            ..Default::default()
        });
        q.check_publish("t", "a").await.unwrap(); // read + a lease of 50
        q.check_publish("t", "a").await.unwrap(); // from the lease
        assert_eq!(store.calls.load(Ordering::SeqCst), 2);
        clock.advance(Duration::from_micros(LEASE_FOR_US + 1));
        q.check_publish("t", "a").await.unwrap();
        assert_eq!(
            store.calls.load(Ordering::SeqCst),
            3,
            "the 48 left expired; a new lease was taken"
        );
    }
}
