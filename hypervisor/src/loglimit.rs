//! A per-second budget of log lines, for messages a guest's own actions cause (an ignored
//! port, a refused MSR): a guest repeating such an action must not flood the console,
//! where each line costs the printing CPU the time its serial port takes. Lock-free, so
//! any CPU may ask; the wrapper that reads the clock and logs is `domain::guest_debug!`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// At most `PER_SECOND` lines a second; the lines left out are counted and handed to the
/// next line let through, which says so.
#[derive(Default)]
pub struct LogLimit {
    /// The second the count is for.
    second: AtomicU64,
    count: AtomicU32,
    dropped: AtomicU32,
}

impl LogLimit {
    pub const PER_SECOND: u32 = 10;

    /// Whether one more line may be printed in `second` (whole seconds of any clock that
    /// does not go back): `Some(n)` with the `n` lines left out since the last one let
    /// through, or None. Approximate when CPUs race at a second's turn: a few lines more
    /// or less, never a flood.
    pub fn allow(&self, second: u64) -> Option<u32> {
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= Self::PER_SECOND {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.dropped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_second_and_the_rest_counted() {
        let l = LogLimit::default();
        for _ in 0..LogLimit::PER_SECOND {
            assert_eq!(l.allow(5), Some(0));
        }
        for _ in 0..7 {
            assert_eq!(l.allow(5), None);
        }
        // The next second: the first line carries the seven left out, the next none.
        assert_eq!(l.allow(6), Some(7));
        assert_eq!(l.allow(6), Some(0));
        // A quiet stretch and a jump of many seconds start a fresh budget.
        assert_eq!(l.allow(1000), Some(0));
    }

    #[test]
    fn a_budget_is_per_limit() {
        let (a, b) = (LogLimit::default(), LogLimit::default());
        for _ in 0..20 {
            a.allow(1);
        }
        assert_eq!(
            b.allow(1),
            Some(0),
            "another domain's flood costs this one nothing"
        );
        assert_eq!(a.allow(2), Some(10));
    }
}
