//! The operator's wall clock, as an input.
//!
//! Wall-clock time decides behaviour in a few places: when a key rotation is due, which activity-log window the key
//! watcher reads, how long a long-running operation has been in flight and when it may be polled again, and the
//! timestamps written to status. Those places read the time from a [`Clock`] passed down from the configuration
//! ([`crate::reconciler::ControllerConfig::clock`], which is [`crate::azure::ArmClientOptions::clock`]), never from
//! the global clock, so a test can move it.
//!
//! Durations (requeues, back-off, polls, throttling, the principal wait) run on tokio's clock instead
//! (`tokio::time::{sleep, Instant}`), which a unit test pauses and advances (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance`). [`ManualClock::following_tokio`] ties the two together: a wall clock that moves exactly
//! as tokio's clock does.
//!
//! Production uses [`Clock::system`] (the default): `jiff::Timestamp::now()`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::sync::lock;

/// Where wall-clock time comes from.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A shared handle on a [`TimeSource`]; cheap to clone. The default is the system clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemClock))
    }

    /// A clock reading `source`.
    pub fn new(source: impl TimeSource + 'static) -> Clock {
        Clock(Arc::new(source))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.0.now()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Clock {
        Clock::new(manual)
    }
}

/// `jiff::Timestamp::now()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl TimeSource for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock a test moves by hand ([`ManualClock::advance`]); clones share the same time. It starts from a fixed
/// instant, from the system clock, or from tokio's clock, and adds everything it was advanced by.
#[derive(Clone, Debug)]
pub struct ManualClock {
    base: Base,
    offset: Arc<Mutex<SignedDuration>>,
}

#[derive(Clone, Copy, Debug)]
enum Base {
    /// Stands still at this instant.
    Fixed(Timestamp),
    /// The system clock.
    System,
    /// `anchor` plus the time tokio's clock moved since `since`.
    Tokio { anchor: Timestamp, since: tokio::time::Instant },
}

impl ManualClock {
    /// Stands still at `at` until advanced.
    pub fn fixed(at: Timestamp) -> ManualClock {
        ManualClock::with_base(Base::Fixed(at))
    }

    /// The system clock plus what it was advanced by: runs alongside a simulator whose clock is moved the same way
    /// (the ARM simulator's `advance_clock`).
    pub fn ahead_of_system() -> ManualClock {
        ManualClock::with_base(Base::System)
    }

    /// Starts at `anchor` and moves as tokio's clock does (plus what it was advanced by): under paused time,
    /// `tokio::time::advance` moves timers and this wall clock together. Must be created inside a tokio runtime.
    pub fn following_tokio(anchor: Timestamp) -> ManualClock {
        ManualClock::with_base(Base::Tokio { anchor, since: tokio::time::Instant::now() })
    }

    fn with_base(base: Base) -> ManualClock {
        ManualClock { base, offset: Arc::new(Mutex::new(SignedDuration::ZERO)) }
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        let mut offset = lock(&self.offset);
        *offset = offset.saturating_add(by);
    }

    /// How far it was advanced in all.
    pub fn offset(&self) -> SignedDuration {
        *lock(&self.offset)
    }

    /// A [`Clock`] handle on this clock (which keeps moving with it).
    pub fn clock(&self) -> Clock {
        Clock::new(self.clone())
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> Timestamp {
        let base = match self.base {
            Base::Fixed(at) => at,
            Base::System => Timestamp::now(),
            Base::Tokio { anchor, since } => {
                let moved = SignedDuration::try_from(since.elapsed()).unwrap_or(SignedDuration::MAX);
                anchor.saturating_add(moved).unwrap_or(Timestamp::MAX)
            }
        };
        base.saturating_add(self.offset()).unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_fixed_clock_moves_only_when_advanced_and_clones_share_it() {
        let manual = ManualClock::fixed(at("2026-01-01T00:00:00Z"));
        let clock = manual.clock();
        assert_eq!(clock.now(), at("2026-01-01T00:00:00Z"));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), at("2026-01-01T00:00:00Z"));
        manual.clone().advance(Duration::from_secs(31 * 86_400));
        assert_eq!(clock.now(), at("2026-02-01T00:00:00Z"));
        assert_eq!(manual.offset(), SignedDuration::from_hours(31 * 24));
    }

    #[test]
    fn ahead_of_system_adds_the_offset_to_the_system_clock() {
        let manual = ManualClock::ahead_of_system();
        manual.advance(Duration::from_secs(3600));
        let before = Timestamp::now();
        let now = manual.now();
        let after = Timestamp::now();
        assert!(now >= before + SignedDuration::from_hours(1) && now <= after + SignedDuration::from_hours(1));
        assert!(SystemClock.now() >= after);
    }

    #[tokio::test(start_paused = true)]
    async fn following_tokio_moves_with_paused_time() {
        let manual = ManualClock::following_tokio(at("2026-01-01T00:00:00Z"));
        let clock = Clock::from(manual.clone());
        assert_eq!(clock.now(), at("2026-01-01T00:00:00Z"));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), at("2026-01-01T00:01:30Z"));
        // A sleep under paused time completes at once, and the wall clock saw all of it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), at("2026-01-01T01:01:30Z"));
        manual.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), at("2026-01-01T01:02:00Z"));
    }

    #[test]
    fn the_default_is_the_system_clock() {
        let before = Timestamp::now();
        let now = Clock::default().now();
        assert!(now >= before && now <= Timestamp::now());
        assert_eq!(format!("{:?}", Clock::default()), "SystemClock");
    }
}
