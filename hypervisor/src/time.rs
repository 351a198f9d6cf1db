//! Time: TSC-based system time and the pvclock scale factors guests use to read it.
//!
//! Xen system time is nanoseconds since boot. The hypervisor measures the TSC frequency
//! once at boot (see `arch::x86::tsc`) and converts with the pvclock formula guests
//! also apply: `ns = ((tsc_delta << shift) * mul) >> 32` (shift may be negative).

/// A pvclock scale: `tsc_to_system_mul` and `tsc_shift` of `vcpu_time_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub mul: u32,
    pub shift: i8,
}

impl Scale {
    /// The scale converting ticks of a `hz` clock to nanoseconds, as precise as 32 bits allow.
    pub fn for_frequency(hz: u64) -> Scale {
        assert!(hz > 0);
        // Find shift so that 2^32 > ns_per_tick * 2^-shift ... i.e. scale the tick rate
        // into [1e9/2, 1e9) * 2^k range so that mul = (1e9 << 32) / (hz scaled) fits.
        let mut shift: i32 = 0;
        let mut tps = hz; // ticks per second after shifting
        let ns = 1_000_000_000u64;
        while tps > 2 * ns {
            tps >>= 1;
            shift -= 1;
        }
        while tps <= ns {
            tps <<= 1;
            shift += 1;
        }
        let mul = ((u128::from(ns) << 32) / u128::from(tps)) as u32;
        Scale {
            mul,
            shift: shift as i8,
        }
    }

    /// Converts a tick count to nanoseconds exactly as a pvclock guest does.
    pub fn ticks_to_ns(self, ticks: u64) -> u64 {
        let shifted = if self.shift >= 0 {
            ticks << self.shift
        } else {
            ticks >> -self.shift
        };
        ((u128::from(shifted) * u128::from(self.mul)) >> 32) as u64
    }

    /// Converts nanoseconds back to ticks (rounded up), for timer deadlines.
    pub fn ns_to_ticks(self, ns: u64) -> u64 {
        let shifted = ((u128::from(ns) << 32).div_ceil(u128::from(self.mul.max(1)))) as u64;
        if self.shift >= 0 {
            shifted >> self.shift
        } else {
            shifted.saturating_mul(1 << -self.shift)
        }
    }
}

/// Seconds since the Unix epoch of a UTC calendar date (proleptic Gregorian), or None for
/// an impossible date. Used to turn the RTC reading into the guests' wallclock.
pub fn unix_seconds(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<u64> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // Days from 1970-01-01 by the civil-from-days inverse (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (i64::from(year) - 1, month + 9)
    } else {
        (i64::from(year), month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(m) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
        .ok()
}

/// The measured TSC and the moment system time started.
#[cfg(target_os = "none")]
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    pub tsc_hz: u64,
    pub boot_tsc: u64,
    pub scale: Scale,
    /// UTC wallclock (ns since the epoch) at system time 0, from the RTC.
    pub boot_utc_ns: u64,
}

#[cfg(target_os = "none")]
static BASE: spin::Once<TimeBase> = spin::Once::new();

/// Measures the TSC and starts system time. Call once, early.
#[cfg(target_os = "none")]
pub fn init() -> TimeBase {
    *BASE.call_once(|| {
        let tsc_hz = crate::arch::x86::tsc::measure_hz().max(1_000_000);
        let (y, mo, d, h, mi, s) = crate::arch::x86::rtc::read();
        let boot_utc_ns = unix_seconds(y, mo, d, h, mi, s).map_or(0, |s| s * 1_000_000_000);
        TimeBase {
            tsc_hz,
            boot_tsc: crate::arch::x86::tsc::rdtsc(),
            scale: Scale::for_frequency(tsc_hz),
            boot_utc_ns,
        }
    })
}

/// The TSC-to-nanoseconds scale (identity-ish before `init`).
#[cfg(target_os = "none")]
pub fn scale() -> Scale {
    BASE.get().map_or(
        Scale {
            mul: u32::MAX,
            shift: 0,
        },
        |b| b.scale,
    )
}

/// The measured TSC frequency (Hz; 0 before `init`).
#[cfg(target_os = "none")]
pub fn tsc_hz() -> u64 {
    BASE.get().map_or(0, |b| b.tsc_hz)
}

/// The current TSC and Xen system time (ns since boot).
#[cfg(target_os = "none")]
pub fn now() -> (u64, u64) {
    let tsc = crate::arch::x86::tsc::rdtsc();
    let ns = BASE
        .get()
        .map_or(0, |b| b.scale.ticks_to_ns(tsc.wrapping_sub(b.boot_tsc)));
    (tsc, ns)
}

/// The wallclock base set by the control domain (`XENPF_settime*`), if it set one.
#[cfg(target_os = "none")]
static WALLCLOCK_SET: spin::Once<core::sync::atomic::AtomicU64> = spin::Once::new();

/// UTC (ns since the epoch) at system time 0: the control domain's setting if it made
/// one, else the RTC's reading at boot (0 if the RTC was unreadable).
#[cfg(target_os = "none")]
pub fn boot_wallclock_ns() -> u64 {
    match WALLCLOCK_SET.get() {
        Some(w) => w.load(core::sync::atomic::Ordering::Relaxed),
        None => BASE.get().map_or(0, |b| b.boot_utc_ns),
    }
}

/// Sets the wallclock so that it reads `utc_ns` (ns since the epoch) at system time
/// `system_ns` (Xen's `do_settime`; wrapping arithmetic on the guest's numbers, as Xen's
/// unsigned 64-bit sum).
#[cfg(target_os = "none")]
pub fn set_wallclock(utc_ns: u64, system_ns: u64) {
    let base = utc_ns.wrapping_sub(system_ns);
    WALLCLOCK_SET
        .call_once(|| core::sync::atomic::AtomicU64::new(base))
        .store(base, core::sync::atomic::Ordering::Relaxed);
}

/// The TSC value at which system time reaches `ns`.
#[cfg(target_os = "none")]
pub fn tsc_at(ns: u64) -> u64 {
    BASE.get()
        .map_or(0, |b| b.boot_tsc.wrapping_add(b.scale.ns_to_ticks(ns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_common_frequencies_accurately() {
        for hz in [
            1_000_000u64,
            14_318_180,
            1_000_000_000,
            2_400_000_000,
            3_999_999_999,
            5_000_000_000,
        ] {
            let s = Scale::for_frequency(hz);
            let one_second = s.ticks_to_ns(hz);
            assert!(
                one_second.abs_diff(1_000_000_000) < 10,
                "{hz} Hz: {one_second} ns"
            );
            let ten_ms = s.ns_to_ticks(10_000_000);
            // Rounding up before undoing a negative shift costs at most 2^-shift ticks.
            assert!(
                ten_ms >= hz / 100 && ten_ms - hz / 100 <= 8,
                "{hz} Hz: {ten_ms} ticks for 10 ms"
            );
        }
    }

    #[test]
    fn unix_seconds_of_known_dates() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_seconds(2000, 3, 1, 0, 0, 0), Some(951_868_800));
        assert_eq!(unix_seconds(2026, 11, 21, 23, 3, 7), Some(1_795_302_187));
        assert_eq!(unix_seconds(2024, 2, 29, 12, 0, 0), Some(1_709_208_000));
        assert_eq!(unix_seconds(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(unix_seconds(1969, 12, 31, 23, 59, 59), None);
    }

    #[test]
    fn large_deltas_do_not_overflow() {
        let s = Scale::for_frequency(3_000_000_000);
        let day = 3_000_000_000u64 * 86_400;
        assert!(s.ticks_to_ns(day).abs_diff(86_400_000_000_000) < 1_000_000);
    }
}
