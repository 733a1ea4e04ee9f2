//! Quotas and rate limits: a tenant's limits (its own, over the
//! deployment's defaults), the scopes they apply to, and the token-bucket
//! arithmetic (GCRA) every rate limiter keeps.
//!
//! A bucket is one number, its theoretical arrival time (`tat`, in
//! microseconds). A take at `now` is allowed when `max(tat, now) - now` is
//! within the burst tolerance; it then moves `tat` one emission interval
//! on. Written as two conditional updates (see [`Gcra`]) it is correct
//! across any number of concurrent writers.

use serde::{Deserialize, Serialize};

/// A rate: `per_s` takes a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u32,
    pub burst: u32,
}

impl Rate {
    /// `None` for a rate of 0 (no limit); a burst of 0 counts as 1.
    pub fn new(per_s: u32, burst: Option<u32>) -> Option<Rate> {
        (per_s > 0).then(|| Rate {
            per_s,
            burst: burst.unwrap_or(per_s).max(1),
        })
    }

    /// The bucket's arithmetic for this rate.
    pub fn gcra(self) -> Gcra {
        let interval_us = (1_000_000 / u64::from(self.per_s)).max(1);
        Gcra {
            interval_us,
            tolerance_us: interval_us * u64::from(self.burst.saturating_sub(1)),
        }
    }
}

/// GCRA for one rate: the emission interval and the burst tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval_us: u64,
    pub tolerance_us: u64,
}

/// What a take of up to `want` tokens at `now` does to a bucket whose
/// stored `tat` is known. A take is granted as many tokens as fit (at
/// least one), so an instance can lease a chunk in one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The bucket is idle (no `tat`, or `tat <= now`): set
    /// `tat = now + granted × interval`, on condition that it is still idle.
    Start { new_tat: u64, granted: u32 },
    /// The bucket is busy but has room: `tat += granted × interval`, on
    /// condition that `now < tat <= ceiling` (see [`Gcra::advance_ceiling`]).
    Advance { new_tat: u64, granted: u32 },
    /// Over the limit: retry after this many microseconds.
    Refuse { wait_us: u64 },
}

impl Gcra {
    /// The step for one token from a bucket at `tat` (`None`: no bucket yet).
    pub fn step(&self, tat: Option<u64>, now: u64) -> Step {
        self.step_n(tat, now, 1)
    }

    /// The step for up to `want` tokens (at least one is asked for).
    pub fn step_n(&self, tat: Option<u64>, now: u64, want: u32) -> Step {
        let want = want.max(1);
        match tat {
            Some(tat) if tat > now => {
                let ahead = tat - now;
                if ahead > self.tolerance_us {
                    return Step::Refuse {
                        wait_us: ahead - self.tolerance_us,
                    };
                }
                let room = (self.tolerance_us - ahead) / self.interval_us + 1;
                let granted = want.min(u32::try_from(room).unwrap_or(u32::MAX));
                Step::Advance {
                    new_tat: tat + self.interval_us * u64::from(granted),
                    granted,
                }
            }
            _ => {
                let granted = want.min(self.burst());
                Step::Start {
                    new_tat: now + self.interval_us * u64::from(granted),
                    granted,
                }
            }
        }
    }

    /// The tokens a full bucket holds.
    pub fn burst(&self) -> u32 {
        u32::try_from(self.tolerance_us / self.interval_us + 1).unwrap_or(u32::MAX)
    }

    /// The largest `tat` an [`Step::Advance`] of `granted` tokens accepts
    /// at `now`: the last of them must still be within the tolerance.
    pub fn advance_ceiling(&self, now: u64, granted: u32) -> u64 {
        (now + self.tolerance_us)
            .saturating_sub(self.interval_us * u64::from(granted.saturating_sub(1)))
    }
}

/// A take's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// This many tokens were taken (at least one, at most the ones asked for).
    Granted(u32),
    /// Refused; the bucket has room again after `retry_after_ms`.
    Limited { retry_after_ms: u64 },
}

/// How many tokens an instance leases from a shared bucket at once: a
/// twentieth of a second of the rate, at most half the burst, at least
/// one (a slow bucket is taken token by token, exactly).
pub fn lease_size(rate: Rate) -> u32 {
    (rate.per_s / 20).min(rate.burst / 2).max(1)
}

/// How long leased tokens stay usable, in microseconds; the ones left then
/// are dropped (at most one lease's worth per instance and bucket).
pub const LEASE_FOR_US: u64 = 1_000_000;

/// Rounds a wait in microseconds up to whole milliseconds (at least 1).
pub fn wait_ms(wait_us: u64) -> u64 {
    wait_us.div_ceil(1000).max(1)
}

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The tenant's publish rate.
    Tenant,
    /// One channel's publish rate.
    Channel,
    /// One connection's join/ack rate.
    Connection,
    /// The tenant's concurrent connections.
    Connections,
    /// The channels one connection may join.
    Channels,
    /// The tenant's HTTP reads (history, presence, a channel's state).
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Channel => "channel",
            Scope::Connection => "connection",
            Scope::Connections => "connections",
            Scope::Channels => "channels",
            Scope::Read => "read",
        }
    }
}

/// A tenant's limits; a field left out is unlimited (or, in a tenant's own
/// settings, the deployment default). Rates are events (or actions) a
/// second; a burst left out equals the rate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_publish_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_publish_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_action_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_action_burst: Option<u32>,
    /// HTTP reads a second of the whole tenant (history pages, presence,
    /// a channel's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_burst: Option<u32>,
    /// Count and log what would be refused, refuse nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

impl TenantLimits {
    /// `self` over `defaults`, field by field.
    pub fn over(&self, defaults: &TenantLimits) -> TenantLimits {
        TenantLimits {
            publish_rate: self.publish_rate.or(defaults.publish_rate),
            publish_burst: self.publish_burst.or(defaults.publish_burst),
            channel_publish_rate: self.channel_publish_rate.or(defaults.channel_publish_rate),
            channel_publish_burst: self
                .channel_publish_burst
                .or(defaults.channel_publish_burst),
            max_connections: self.max_connections.or(defaults.max_connections),
            max_channels: self.max_channels.or(defaults.max_channels),
            connection_action_rate: self
                .connection_action_rate
                .or(defaults.connection_action_rate),
            connection_action_burst: self
                .connection_action_burst
                .or(defaults.connection_action_burst),
            read_rate: self.read_rate.or(defaults.read_rate),
            read_burst: self.read_burst.or(defaults.read_burst),
            dry_run: self.dry_run.or(defaults.dry_run),
        }
    }

    pub fn publish(&self) -> Option<Rate> {
        Rate::new(self.publish_rate.unwrap_or(0), self.publish_burst)
    }

    pub fn channel_publish(&self) -> Option<Rate> {
        Rate::new(
            self.channel_publish_rate.unwrap_or(0),
            self.channel_publish_burst,
        )
    }

    pub fn connection_actions(&self) -> Option<Rate> {
        Rate::new(
            self.connection_action_rate.unwrap_or(0),
            self.connection_action_burst,
        )
    }

    pub fn reads(&self) -> Option<Rate> {
        Rate::new(self.read_rate.unwrap_or(0), self.read_burst)
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// Whether any limit is set at all.
    pub fn is_empty(&self) -> bool {
        *self == TenantLimits::default()
    }
}

/// The bucket names, one per scope and subject (opaque to the limiter).
pub fn tenant_bucket(tenant: &str) -> String {
    format!("bucket#tenant#{tenant}")
}

pub fn channel_bucket(tenant: &str, channel: &str) -> String {
    format!("bucket#channel#{tenant}#{channel}")
}

pub fn connection_bucket(connection_id: &str) -> String {
    format!("bucket#connection#{connection_id}")
}

pub fn read_bucket(tenant: &str) -> String {
    format!("bucket#read#{tenant}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs takes at `now` against one in-memory tat.
    fn take(g: &Gcra, tat: &mut Option<u64>, now: u64) -> bool {
        match g.step(*tat, now) {
            Step::Start { new_tat, .. } | Step::Advance { new_tat, .. } => {
                *tat = Some(new_tat);
                true
            }
            Step::Refuse { .. } => false,
        }
    }

    #[test]
    fn a_burst_is_allowed_up_to_its_size_then_refused() {
        let g = Rate::new(5, Some(10)).unwrap().gcra();
        let mut tat = None;
        let allowed = (0..50).filter(|_| take(&g, &mut tat, 1_000_000)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn the_wait_is_exactly_until_one_more_fits() {
        let g = Rate::new(5, Some(2)).unwrap().gcra(); // 200 ms interval
        let mut tat = None;
        assert!(take(&g, &mut tat, 0));
        assert!(take(&g, &mut tat, 0));
        let Step::Refuse { wait_us } = g.step(tat, 0) else {
            panic!("third take allowed")
        };
        assert_eq!(wait_us, 200_000);
        assert!(!take(&g, &mut tat, wait_us - 1));
        assert!(take(&g, &mut tat, wait_us));
    }

    #[test]
    fn a_steady_rate_is_sustained() {
        let g = Rate::new(10, Some(1)).unwrap().gcra();
        let mut tat = None;
        let allowed = (0..100u64)
            .filter(|i| take(&g, &mut tat, i * 100_000))
            .count();
        assert_eq!(allowed, 100);
        // Twice the rate: half refused.
        let mut tat = None;
        let allowed = (0..100u64)
            .filter(|i| take(&g, &mut tat, i * 50_000))
            .count();
        assert_eq!(allowed, 50);
    }

    #[test]
    fn a_rate_of_zero_is_no_limit_and_own_settings_win_field_by_field() {
        assert_eq!(Rate::new(0, Some(5)), None);
        let defaults = TenantLimits {
            publish_rate: Some(100),
            max_connections: Some(10),
            ..Default::default()
        };
        let own = TenantLimits {
            publish_rate: Some(5),
            ..Default::default()
        };
        let eff = own.over(&defaults);
        assert_eq!(eff.publish_rate, Some(5));
        assert_eq!(eff.max_connections, Some(10));
        assert_eq!(eff.publish(), Some(Rate { per_s: 5, burst: 5 }));
        assert!(TenantLimits::default().is_empty());
        assert_eq!(wait_ms(1), 1);
        assert_eq!(wait_ms(200_000), 200);
        assert_eq!(wait_ms(200_001), 201);
    }

    #[test]
    fn limits_round_trip_as_json_and_unknown_fields_are_refused() {
        let l: TenantLimits =
            serde_json::from_str(r#"{"publish_rate":5,"publish_burst":10,"dry_run":true}"#)
                .unwrap();
        assert_eq!(
            l.publish(),
            Some(Rate {
                per_s: 5,
                burst: 10
            })
        );
        assert!(l.is_dry_run());
        assert_eq!(
            serde_json::from_str::<TenantLimits>(&serde_json::to_string(&l).unwrap()).unwrap(),
            l
        );
        assert!(serde_json::from_str::<TenantLimits>(r#"{"publish_rat":5}"#).is_err());
    }

    #[test]
    fn a_chunk_is_granted_as_far_as_it_fits_and_never_past_the_burst() {
        let g = Rate::new(10, Some(10)).unwrap().gcra(); // 100 ms interval
        assert_eq!(g.burst(), 10);
        let Step::Start { new_tat, granted } = g.step_n(None, 0, 4) else {
            panic!("idle bucket not started")
        };
        assert_eq!((new_tat, granted), (400_000, 4));
        // 6 left: a chunk of 8 gets 6, and its ceiling admits exactly that.
        let Step::Advance { new_tat, granted } = g.step_n(Some(400_000), 0, 8) else {
            panic!("busy bucket not advanced")
        };
        assert_eq!((new_tat, granted), (1_000_000, 6));
        assert!(400_000 <= g.advance_ceiling(0, 6));
        assert!(400_000 > g.advance_ceiling(0, 7));
        assert_eq!(
            g.step_n(Some(1_000_000), 0, 1),
            Step::Refuse { wait_us: 100_000 }
        );
        // An idle bucket never grants more than its burst.
        assert!(matches!(
            g.step_n(None, 0, 50),
            Step::Start { granted: 10, .. }
        ));
    }

    #[test]
    fn a_lease_is_a_twentieth_of_a_second_of_the_rate() {
        assert_eq!(lease_size(Rate::new(5, Some(10)).unwrap()), 1);
        assert_eq!(lease_size(Rate::new(200, None).unwrap()), 10);
        assert_eq!(lease_size(Rate::new(1000, Some(4)).unwrap()), 2);
        assert_eq!(lease_size(Rate::new(100_000, None).unwrap()), 5000);
    }
}
