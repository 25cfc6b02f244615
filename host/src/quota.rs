//! Per-tenant admission control: the rate quotas of [`Quota`] as token buckets, and the
//! stored-bytes quota, checked before a request is executed so that one tenant flooding a
//! node is refused cheaply instead of taking the others' share.
//!
//! A bucket holds at most one second of its rate (a burst of `rate` requests) and refills
//! continuously. Rates are wall-clock admission control on the node that answers (the
//! primary in a cluster), not replicated state: the quota values themselves are catalog
//! state, set by a logged `QuotaSet` record.

use kimberlite_client::protocol::{ErrorCode, WireError};
use kimberlite_kernel::{Quota, TenantId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The rates a bucket meters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rate {
    Appends,
    Queries,
    /// Wasm fuel burnt by the tenant's projections and policies.
    Fuel,
}

impl Rate {
    fn name(self) -> &'static str {
        match self {
            Rate::Appends => "appends_per_second",
            Rate::Queries => "queries_per_second",
            Rate::Fuel => "fuel_per_second",
        }
    }

    fn limit(self, quota: &Quota) -> Option<u64> {
        match self {
            Rate::Appends => quota.appends_per_second,
            Rate::Queries => quota.queries_per_second,
            Rate::Fuel => quota.fuel_per_second,
        }
    }
}

struct Bucket {
    rate: u64,
    tokens: f64,
    refilled: Instant,
}

/// Every tenant's buckets on this node.
#[derive(Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<(TenantId, Rate), Bucket>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").finish_non_exhaustive()
    }
}

impl Quotas {
    /// Takes `amount` from the tenant's `rate` bucket, or refuses with `QuotaExceeded`
    /// naming the quota, its value and when to retry.
    pub fn take(
        &self,
        tenant: TenantId,
        name: &str,
        quota: &Quota,
        rate: Rate,
        amount: u64,
    ) -> Result<(), WireError> {
        let Some(limit) = rate.limit(quota) else {
            return Ok(());
        };
        if amount > limit {
            return Err(exceeded(format!(
                "tenant `{name}`: {amount} at once is above its quota {} = {limit}; split the request",
                rate.name()
            )));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = refill(&mut buckets, tenant, rate, limit);
        if bucket.tokens >= amount as f64 {
            bucket.tokens -= amount as f64;
            return Ok(());
        }
        let wait_ms = ((amount as f64 - bucket.tokens) / limit as f64 * 1_000.0).ceil();
        Err(exceeded(format!(
            "tenant `{name}` is over its quota {} = {limit}; retry in {wait_ms} ms",
            rate.name()
        )))
    }

    /// Whether the tenant's fuel bucket is not in debt: fuel is charged after a call (its
    /// cost is known only then), so a call may overdraw, and the next waits for the refill.
    pub fn fuel_available(&self, tenant: TenantId, quota: &Quota) -> bool {
        let Some(limit) = quota.fuel_per_second else {
            return true;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        refill(&mut buckets, tenant, Rate::Fuel, limit).tokens > 0.0
    }

    /// Charges `fuel` burnt to the tenant's fuel bucket; the debt is capped at one second's
    /// worth, so one heavy call pauses the tenant's Wasm for at most about a second.
    pub fn charge_fuel(&self, tenant: TenantId, quota: &Quota, fuel: u64) {
        let Some(limit) = quota.fuel_per_second else {
            return;
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = refill(&mut buckets, tenant, Rate::Fuel, limit);
        bucket.tokens = (bucket.tokens - fuel as f64).max(-(limit as f64));
    }

    /// A query that masks through policies: refused while the fuel bucket is in debt.
    pub fn check_fuel(&self, tenant: TenantId, name: &str, quota: &Quota) -> Result<(), WireError> {
        if self.fuel_available(tenant, quota) {
            return Ok(());
        }
        Err(exceeded(format!(
            "tenant `{name}` is over its quota fuel_per_second = {}: its masking policies used it up; retry in a second",
            quota.fuel_per_second.unwrap_or_default()
        )))
    }

    /// Refuses a write once the tenant's log holds `stored_bytes` or more.
    pub fn check_stored(
        &self,
        name: &str,
        quota: &Quota,
        stored_bytes: u64,
    ) -> Result<(), WireError> {
        match quota.stored_bytes {
            Some(limit) if stored_bytes >= limit => Err(exceeded(format!(
                "tenant `{name}` stores {stored_bytes} bytes, at or above its quota stored_bytes = {limit}; nothing more is written until the quota is raised"
            ))),
            _ => Ok(()),
        }
    }
}

/// The tenant's bucket for `rate`, refilled up to now (a new or resized one starts full).
fn refill(
    buckets: &mut HashMap<(TenantId, Rate), Bucket>,
    tenant: TenantId,
    rate: Rate,
    limit: u64,
) -> &mut Bucket {
    let now = Instant::now();
    let bucket = buckets.entry((tenant, rate)).or_insert(Bucket {
        rate: limit,
        tokens: limit as f64,
        refilled: now,
    });
    if bucket.rate != limit {
        *bucket = Bucket {
            rate: limit,
            tokens: limit as f64,
            refilled: now,
        };
    }
    let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * limit as f64).min(limit as f64);
    bucket.refilled = now;
    bucket
}

fn exceeded(message: String) -> WireError {
    WireError {
        code: ErrorCode::QuotaExceeded,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_refuses_naming_the_quota() {
        let quotas = Quotas::default();
        let quota = Quota {
            queries_per_second: Some(5),
            ..Quota::default()
        };
        for _ in 0..5 {
            quotas.take(1, "t", &quota, Rate::Queries, 1).unwrap();
        }
        let refused = quotas.take(1, "t", &quota, Rate::Queries, 1).unwrap_err();
        assert_eq!(refused.code, ErrorCode::QuotaExceeded);
        assert!(
            refused.message.contains("queries_per_second = 5"),
            "{}",
            refused.message
        );
        // Other tenants and other rates have their own buckets; no quota, no limit.
        quotas.take(2, "u", &quota, Rate::Queries, 1).unwrap();
        quotas.take(1, "t", &quota, Rate::Appends, 1_000).unwrap();
        let big = quotas.take(2, "u", &quota, Rate::Queries, 6).unwrap_err();
        assert!(big.message.contains("split the request"), "{}", big.message);
        std::thread::sleep(std::time::Duration::from_millis(250));
        quotas.take(1, "t", &quota, Rate::Queries, 1).unwrap();
    }

    #[test]
    fn stored_bytes_refuses_at_the_limit() {
        let quotas = Quotas::default();
        let quota = Quota {
            stored_bytes: Some(100),
            ..Quota::default()
        };
        quotas.check_stored("t", &quota, 99).unwrap();
        let refused = quotas.check_stored("t", &quota, 100).unwrap_err();
        assert!(refused.message.contains("stored_bytes = 100"));
    }
}
