//! Per-source rate limits (PROTOCOL.md §15.11): a token bucket per
//! observed source address, in a table of bounded size.

use std::collections::HashMap;

use core::net::Ipv4Addr;

use crate::time::Instant;

/// Tokens are kept in millionths, so refills are exact integers.
const SCALE: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// Allows `rate` messages per second per source with bursts of `burst`.
/// At most `max_sources` buckets exist: when full, idle (refilled) buckets
/// are dropped, and if none is idle a new source is refused, so a flood
/// from many addresses costs bounded memory.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: u64,
    burst: u64,
    max_sources: usize,
    buckets: HashMap<Ipv4Addr, Bucket>,
}

impl RateLimiter {
    /// `rate` = 0 disables limiting.
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate),
            burst: u64::from(burst.max(1)),
            max_sources,
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = (now - bucket.last).as_micros() as u64;
        bucket.tokens = bucket
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.burst * SCALE);
        bucket.last = now;
    }

    /// Takes one token for `source`; false if there is none.
    pub fn allow(&mut self, now: Instant, source: Ipv4Addr) -> bool {
        if self.rate == 0 {
            return true;
        }
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.sweep(now);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let full = Bucket {
            tokens: self.burst * SCALE,
            last: now,
        };
        let mut bucket = self.buckets.get(&source).copied().unwrap_or(full);
        self.refill(&mut bucket, now);
        let allowed = bucket.tokens >= SCALE;
        if allowed {
            bucket.tokens -= SCALE;
        }
        self.buckets.insert(source, bucket);
        allowed
    }

    /// Drops buckets that have refilled completely (equivalent to absent).
    pub fn sweep(&mut self, now: Instant) {
        let (rate, cap) = (self.rate, self.burst * SCALE);
        self.buckets.retain(|_, b| {
            let elapsed = (now - b.last).as_micros() as u64;
            b.tokens.saturating_add(elapsed.saturating_mul(rate)) < cap
        });
    }

    /// How many source addresses have a bucket.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut r = RateLimiter::new(10, 5, 100);
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let t0 = Instant::from_millis(1000);
        assert_eq!((0..8).filter(|_| r.allow(t0, a)).count(), 5);
        // 100 ms later: exactly one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.allow(t1, a));
        assert!(!r.allow(t1, a));
        // Another source is independent.
        assert!(r.allow(t1, Ipv4Addr::new(192, 0, 2, 2)));
    }

    #[test]
    fn table_is_bounded_and_idle_buckets_are_reclaimed() {
        let mut r = RateLimiter::new(10, 2, 3);
        let t0 = Instant::from_millis(0);
        for i in 0..3 {
            assert!(r.allow(t0, Ipv4Addr::new(10, 0, 0, i)));
        }
        // Full, nobody idle yet: a fourth source is refused.
        assert!(!r.allow(t0, Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(r.sources(), 3);
        // After a refill the old buckets are idle and make room.
        let t1 = t0 + Duration::from_secs(1);
        assert!(r.allow(t1, Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(r.sources(), 1);
    }

    #[test]
    fn zero_rate_disables() {
        let mut r = RateLimiter::new(0, 0, 0);
        assert!((0..1000).all(|_| r.allow(Instant::ZERO, Ipv4Addr::LOCALHOST)));
    }
}
