//! Cluster time: clock synchronization across replicas (sans-IO).
//!
//! Only the primary assigns timestamps, and it must not trust its own wall clock alone: it can
//! drift, jump, or be set wrong by an operator. Replicas ping each other; a pong carries the
//! peer's wall clock, and the round trip bounds the error: the peer's offset from us lies in
//! `[offset - rtt/2, offset + rtt/2]`. Marzullo's algorithm finds the interval consistent with
//! the most sources (ourselves included, with zero error); when a majority agree, that interval
//! becomes an *epoch*, and the synchronized time is our wall clock clamped into
//! `epoch start + monotonic elapsed + interval`. Measurements are taken against the monotonic
//! clock from the start of the window, so a jump of our own wall clock during the window or
//! after it cannot move the result outside the agreed interval.
//!
//! A primary without a synchronized clock does not prepare new requests (it could not commit
//! them anyway: a majority it can hear is what synchronization needs). A cluster of one uses its
//! own clock. The primary keeps timestamps strictly increasing with
//! `max(previous + 1, synchronized)`.

use crate::constants::{
    clock_epoch_max_ticks, clock_offset_tolerance_max_ns, clock_window_max_ticks,
    clock_window_min_ticks, replicas_max, tick_ns,
};

/// The two clocks the driver reads: monotonic (never jumps; for durations) and realtime (wall
/// clock; for timestamps). The simulator drives both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub monotonic_ns: u64,
    pub realtime_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    offset_ns: i64,
    one_way_delay_ns: u64,
}

#[derive(Debug, Clone)]
struct Window {
    monotonic_ns: u64,
    realtime_ns: u64,
    sources: [Option<Sample>; replicas_max],
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    monotonic_ns: u64,
    realtime_ns: u64,
    lower_ns: i64,
    upper_ns: i64,
}

#[derive(Debug, Clone)]
pub struct Clock {
    replica: u8,
    replica_count: u8,
    quorum: usize,
    window: Window,
    epoch: Option<Epoch>,
}

impl Clock {
    pub fn new(replica: u8, replica_count: u8, now: Instant) -> Clock {
        assert!(replica < replica_count);
        assert!(replica_count as usize <= replicas_max);
        Clock {
            replica,
            replica_count,
            quorum: replica_count as usize / 2 + 1,
            window: Window::new(now),
            epoch: None,
        }
    }

    /// Record a pong: `ping_monotonic_ns` is our monotonic time when we sent the ping.
    pub fn learn(
        &mut self,
        source: u8,
        ping_monotonic_ns: u64,
        pong_realtime_ns: u64,
        now: Instant,
    ) {
        if source == self.replica || source >= self.replica_count {
            return;
        }
        // Pongs to pings from before this window, or from the future (a bug elsewhere, or a
        // replayed packet after our restart), say nothing reliable about this window.
        if ping_monotonic_ns < self.window.monotonic_ns || ping_monotonic_ns > now.monotonic_ns {
            return;
        }
        let round_trip_ns = now.monotonic_ns - ping_monotonic_ns;
        let one_way_delay_ns = round_trip_ns / 2;
        let our_realtime_ns = self.window.realtime_ns as i128
            + (ping_monotonic_ns + one_way_delay_ns - self.window.monotonic_ns) as i128;
        let offset = pong_realtime_ns as i128 - our_realtime_ns;
        let Ok(offset_ns) = i64::try_from(offset) else {
            return;
        };
        let slot = &mut self.window.sources[source as usize];
        if slot.is_none_or(|sample| one_way_delay_ns < sample.one_way_delay_ns) {
            *slot = Some(Sample {
                offset_ns,
                one_way_delay_ns,
            });
        }
    }

    /// Try to close the window into an epoch; expire an old epoch. Called on every tick.
    pub fn tick(&mut self, now: Instant) {
        if self.replica_count == 1 {
            return;
        }
        if let Some(epoch) = self.epoch
            && now.monotonic_ns - epoch.monotonic_ns > clock_epoch_max_ticks * tick_ns
        {
            self.epoch = None;
        }
        let window_age_ns = now.monotonic_ns - self.window.monotonic_ns;
        if window_age_ns < clock_window_min_ticks * tick_ns {
            return;
        }
        let mut intervals = vec![(0i64, 0i64)];
        for (index, source) in self.window.sources.iter().enumerate() {
            if index == self.replica as usize {
                continue;
            }
            if let Some(sample) = source {
                let error = sample.one_way_delay_ns.min(i64::MAX as u64 / 4) as i64;
                intervals.push((
                    sample.offset_ns.saturating_sub(error),
                    sample.offset_ns.saturating_add(error),
                ));
            }
        }
        // No clock is exact, ours included: find the smallest error margin, added to every
        // interval, with which a majority agree. If even the largest tolerated margin is not
        // enough, the clocks are not synchronized.
        let mut margin_ns: i64 = 0;
        let (count, lower_ns, upper_ns) = loop {
            let widened: Vec<(i64, i64)> = intervals
                .iter()
                .map(|&(lower, upper)| {
                    (
                        lower.saturating_sub(margin_ns),
                        upper.saturating_add(margin_ns),
                    )
                })
                .collect();
            let result = marzullo(&widened);
            if result.0 >= self.quorum || margin_ns as u64 >= clock_offset_tolerance_max_ns {
                break result;
            }
            margin_ns = (margin_ns * 2)
                .max(1_000_000)
                .min(clock_offset_tolerance_max_ns as i64);
        };
        if count >= self.quorum {
            self.epoch = Some(Epoch {
                monotonic_ns: self.window.monotonic_ns,
                realtime_ns: self.window.realtime_ns,
                lower_ns,
                upper_ns,
            });
            self.window = Window::new(now);
        } else if window_age_ns >= clock_window_max_ticks * tick_ns {
            self.window = Window::new(now);
        }
    }

    /// Cluster time, or `None` while no majority of clocks agree.
    pub fn realtime_synchronized(&self, now: Instant) -> Option<u64> {
        if self.replica_count == 1 {
            return Some(now.realtime_ns);
        }
        let epoch = self.epoch?;
        let base = epoch.realtime_ns as i128 + (now.monotonic_ns - epoch.monotonic_ns) as i128;
        let lower = base + epoch.lower_ns as i128;
        let upper = base + epoch.upper_ns as i128;
        let clamped = (now.realtime_ns as i128).clamp(lower, upper);
        Some(clamped.max(0) as u64)
    }
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            monotonic_ns: now.monotonic_ns,
            realtime_ns: now.realtime_ns,
            sources: [None; replicas_max],
        }
    }
}

/// Marzullo's algorithm: the smallest interval contained in the most `intervals`.
/// Returns (how many intervals contain it, lower, upper).
pub fn marzullo(intervals: &[(i64, i64)]) -> (usize, i64, i64) {
    assert!(!intervals.is_empty());
    let mut edges: Vec<(i64, i8)> = Vec::with_capacity(intervals.len() * 2);
    for &(lower, upper) in intervals {
        assert!(lower <= upper);
        // Starts sort before ends at the same point, so touching intervals overlap.
        edges.push((lower, -1));
        edges.push((upper, 1));
    }
    edges.sort_unstable();
    let (mut best, mut count) = (0usize, 0usize);
    let (mut best_lower, mut best_upper) = (0i64, 0i64);
    for index in 0..edges.len() {
        let (value, kind) = edges[index];
        if kind == -1 {
            count += 1;
            if count > best {
                best = count;
                best_lower = value;
                best_upper = edges[index + 1].0;
            }
        } else {
            count -= 1;
        }
    }
    assert!(best >= 1);
    assert!(best_lower <= best_upper);
    (best, best_lower, best_upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marzullo_finds_majority_interval() {
        // Three clocks agree around 10..12, one liar far away.
        let (count, lower, upper) = marzullo(&[(8, 12), (10, 14), (9, 11), (1000, 1010)]);
        assert_eq!((count, lower, upper), (3, 10, 11));
        let (count, _, _) = marzullo(&[(0, 1), (5, 6)]);
        assert_eq!(count, 1);
    }

    #[test]
    fn synchronizes_and_survives_own_jump() {
        let start = Instant {
            monotonic_ns: 0,
            realtime_ns: 1_000_000_000_000,
        };
        let mut clock = Clock::new(0, 3, start);
        assert_eq!(clock.realtime_synchronized(start), None);
        // Both peers are 5 ms ahead; 2 ms round trips.
        for source in [1u8, 2] {
            let now = Instant {
                monotonic_ns: 2_000_000,
                realtime_ns: start.realtime_ns + 2_000_000,
            };
            clock.learn(source, 0, start.realtime_ns + 1_000_000 + 5_000_000, now);
        }
        let later = clock_window_min_ticks * tick_ns;
        let now = Instant {
            monotonic_ns: later,
            realtime_ns: start.realtime_ns + later,
        };
        clock.tick(now);
        let synchronized = clock.realtime_synchronized(now).unwrap();
        // Our clock is outside the agreed [4 ms, 6 ms] offset: clamped to its lower edge.
        assert_eq!(synchronized, now.realtime_ns + 4_000_000);
        // Our wall clock jumps an hour ahead: cluster time does not.
        let jumped = Instant {
            monotonic_ns: later,
            realtime_ns: now.realtime_ns + 3_600_000_000_000,
        };
        assert_eq!(
            clock.realtime_synchronized(jumped).unwrap(),
            now.realtime_ns + 6_000_000
        );
    }
}
