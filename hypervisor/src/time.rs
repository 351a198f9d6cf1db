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
        Scale { mul, shift: shift as i8 }
    }

    /// Converts a tick count to nanoseconds exactly as a pvclock guest does.
    pub fn ticks_to_ns(self, ticks: u64) -> u64 {
        let shifted = if self.shift >= 0 { ticks << self.shift } else { ticks >> -self.shift };
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

/// The measured TSC and the moment system time started.
#[cfg(target_os = "none")]
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    pub tsc_hz: u64,
    pub boot_tsc: u64,
    pub scale: Scale,
}

#[cfg(target_os = "none")]
static BASE: spin::Once<TimeBase> = spin::Once::new();

/// Measures the TSC and starts system time. Call once, early.
#[cfg(target_os = "none")]
pub fn init() -> TimeBase {
    *BASE.call_once(|| {
        let tsc_hz = crate::arch::x86::tsc::measure_hz().max(1_000_000);
        TimeBase { tsc_hz, boot_tsc: crate::arch::x86::tsc::rdtsc(), scale: Scale::for_frequency(tsc_hz) }
    })
}

/// The TSC-to-nanoseconds scale (identity-ish before `init`).
#[cfg(target_os = "none")]
pub fn scale() -> Scale {
    BASE.get().map_or(Scale { mul: u32::MAX, shift: 0 }, |b| b.scale)
}

/// The current TSC and Xen system time (ns since boot).
#[cfg(target_os = "none")]
pub fn now() -> (u64, u64) {
    let tsc = crate::arch::x86::tsc::rdtsc();
    let ns = BASE.get().map_or(0, |b| b.scale.ticks_to_ns(tsc.wrapping_sub(b.boot_tsc)));
    (tsc, ns)
}

/// The TSC value at which system time reaches `ns`.
#[cfg(target_os = "none")]
pub fn tsc_at(ns: u64) -> u64 {
    BASE.get().map_or(0, |b| b.boot_tsc.wrapping_add(b.scale.ns_to_ticks(ns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_common_frequencies_accurately() {
        for hz in [1_000_000u64, 14_318_180, 1_000_000_000, 2_400_000_000, 3_999_999_999, 5_000_000_000] {
            let s = Scale::for_frequency(hz);
            let one_second = s.ticks_to_ns(hz);
            assert!(one_second.abs_diff(1_000_000_000) < 10, "{hz} Hz: {one_second} ns");
            let ten_ms = s.ns_to_ticks(10_000_000);
            // Rounding up before undoing a negative shift costs at most 2^-shift ticks.
            assert!(ten_ms >= hz / 100 && ten_ms - hz / 100 <= 8, "{hz} Hz: {ten_ms} ticks for 10 ms");
        }
    }

    #[test]
    fn large_deltas_do_not_overflow() {
        let s = Scale::for_frequency(3_000_000_000);
        let day = 3_000_000_000u64 * 86_400;
        assert!(s.ticks_to_ns(day).abs_diff(86_400_000_000_000) < 1_000_000);
    }
}
