//! Xen system time through the pvclock in `shared_info.vcpu_info[0].time`.
//!
//! [`map_shared_info`] asks the hypervisor (`XENMEM_add_to_physmap`, space
//! `XENMAPSPACE_shared_info`, index 0) to place the shared-info page at a page of the
//! guest's own `.bss` ([`SharedInfoPage`]), as Linux does with a page of its own RAM.
//! Afterwards that page belongs to the hypervisor and is only read with volatile loads.
//!
//! Invariant: [`SystemTime::now`] follows the pvclock version protocol (retry while the
//! version is odd or changed under the read) and computes
//! `system_time + ((tsc - tsc_timestamp) <<> shift) * mul >> 32`.

use core::ptr;
use core::sync::atomic::{fence, AtomicBool, Ordering};

use xen_abi::memory::{XenAddToPhysmap, XENMAPSPACE_SHARED_INFO};
use xen_abi::xen::{VcpuInfo, VcpuTimeInfo, DOMID_SELF};

use crate::{arch, hypercall};

/// Offset of `vcpu_info[0].time` in the shared-info page.
const VCPU0_TIME_OFFSET: usize = core::mem::offset_of!(VcpuInfo, time);

/// A page-aligned page of guest RAM that becomes the shared-info page.
#[repr(C, align(4096))]
pub struct SharedInfoPage(core::cell::UnsafeCell<[u8; 4096]>);

// SAFETY: the page is only accessed through raw pointers with volatile reads; the runtime
// runs on one vCPU.
unsafe impl Sync for SharedInfoPage {}

/// The page `map_shared_info` hands to the hypervisor (in `.bss`).
pub static SHARED_INFO_PAGE: SharedInfoPage =
    SharedInfoPage(core::cell::UnsafeCell::new([0; 4096]));

static MAPPED: AtomicBool = AtomicBool::new(false);

/// Guest-physical address of [`SHARED_INFO_PAGE`].
pub fn shared_info_gpa() -> u64 {
    SHARED_INFO_PAGE.0.get() as u64
}

/// Maps the shared-info page at [`shared_info_gpa`] with `XENMEM_add_to_physmap`. Returns
/// the raw hypercall result (0 on success). Calling it again remaps (harmless).
pub fn map_shared_info() -> i64 {
    let xatp = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: shared_info_gpa() >> 12,
    };
    // SAFETY: the target page is reserved for this purpose and only ever read with volatile
    // loads (through `SystemTime::now`/`time_info`).
    let rc = unsafe { hypercall::add_to_physmap(&xatp) };
    if rc == 0 {
        MAPPED.store(true, Ordering::Release);
    }
    rc
}

/// Whether [`map_shared_info`] succeeded.
pub fn is_mapped() -> bool {
    MAPPED.load(Ordering::Acquire)
}

/// A consistent snapshot of `vcpu_info[0].time` (version even and unchanged across the read).
/// Returns `None` if the shared-info page is not mapped or the version stayed odd for a long
/// time.
pub fn time_info() -> Option<VcpuTimeInfo> {
    if !is_mapped() {
        return None;
    }
    let p = (shared_info_gpa() as usize + VCPU0_TIME_OFFSET) as *const VcpuTimeInfo;
    for _ in 0..1_000_000 {
        // SAFETY: `p` points into the mapped shared-info page, which is 8-byte aligned for
        // `vcpu_time_info`; the hypervisor may write it concurrently, hence volatile reads.
        let v1 = unsafe { ptr::read_volatile(ptr::addr_of!((*p).version)) };
        if v1 & 1 != 0 {
            arch::pause();
            continue;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let snap = unsafe { ptr::read_volatile(p) };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v2 = unsafe { ptr::read_volatile(ptr::addr_of!((*p).version)) };
        if v1 == v2 {
            return Some(snap);
        }
    }
    None
}

/// Converts a TSC delta to nanoseconds with pvclock's `mul`/`shift`.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta << shift
    } else {
        delta >> shift.unsigned_abs()
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// Xen system time in nanoseconds at TSC value `tsc`, from snapshot `t`.
pub fn system_time_at(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    // A TSC slightly behind the snapshot (another pCPU) counts as no time elapsed.
    let delta = tsc.saturating_sub(t.tsc_timestamp);
    t.system_time
        .wrapping_add(scale_delta(delta, t.tsc_to_system_mul, t.tsc_shift))
}

/// Xen system time now (ns), or `None` if the pvclock is unavailable.
pub fn now_ns() -> Option<u64> {
    let p = (shared_info_gpa() as usize + VCPU0_TIME_OFFSET) as *const u32;
    loop {
        let t = time_info()?;
        let tsc = arch::rdtsc_ordered();
        fence(Ordering::Acquire);
        // SAFETY: `p` is the version field of the mapped page (see `time_info`).
        let v = unsafe { ptr::read_volatile(p) };
        if v == t.version {
            return Some(system_time_at(&t, tsc));
        }
    }
}

/// The TSC frequency in kHz the pvclock implies (as Linux's `xen_tsc_khz`), or 0.
pub fn tsc_khz(t: &VcpuTimeInfo) -> u64 {
    if t.tsc_to_system_mul == 0 {
        return 0;
    }
    let mut khz = (1_000_000u64 << 32) / u64::from(t.tsc_to_system_mul);
    if t.tsc_shift < 0 {
        khz <<= t.tsc_shift.unsigned_abs();
    } else {
        khz >>= t.tsc_shift as u32;
    }
    khz
}

/// The wallclock in `shared_info` (UTC at system time 0) as nanoseconds since the epoch,
/// read with the `wc_version` protocol (retry while odd or changed). `None` if the page is
/// not mapped or the version stayed odd.
pub fn wallclock_ns() -> Option<u64> {
    use xen_abi::xen::SharedInfo;
    if !is_mapped() {
        return None;
    }
    let base = shared_info_gpa() as usize;
    let word = |off: usize| {
        // SAFETY: `off` is a field offset inside the mapped, 4-byte-aligned shared-info
        // page; the hypervisor may change it concurrently, hence a volatile read.
        unsafe { ptr::read_volatile((base + off) as *const u32) }
    };
    for _ in 0..1_000_000 {
        let v1 = word(core::mem::offset_of!(SharedInfo, wc_version));
        if v1 & 1 != 0 {
            arch::pause();
            continue;
        }
        fence(Ordering::Acquire);
        let sec = u64::from(word(core::mem::offset_of!(SharedInfo, wc_sec)))
            | (u64::from(word(core::mem::offset_of!(SharedInfo, wc_sec_hi))) << 32);
        let nsec = u64::from(word(core::mem::offset_of!(SharedInfo, wc_nsec)));
        fence(Ordering::Acquire);
        if word(core::mem::offset_of!(SharedInfo, wc_version)) == v1 {
            return Some(sec.wrapping_mul(1_000_000_000).wrapping_add(nsec));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_the_pvclock_formula() {
        // 2 GHz TSC: 0.5 ns per tick = mul 2^31, shift 0.
        assert_eq!(scale_delta(2_000, 1 << 31, 0), 1_000);
        // 4 GHz TSC with shift -1: delta halved, then * 0.5.
        assert_eq!(scale_delta(4_000, 1 << 31, -1), 1_000);
        // 500 MHz TSC: 2 ns per tick = mul 2^31, shift 2.
        assert_eq!(scale_delta(500, 1 << 31, 2), 1_000);
        // Large deltas do not overflow.
        assert_eq!(
            scale_delta(u64::MAX >> 1, u32::MAX, 0),
            ((u128::from(u64::MAX >> 1) * u128::from(u32::MAX)) >> 32) as u64
        );
    }

    #[test]
    fn system_time_and_khz() {
        let t = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1_000,
            system_time: 5_000_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 0,
            ..Default::default()
        };
        assert_eq!(system_time_at(&t, 3_000), 5_001_000);
        assert_eq!(system_time_at(&t, 500), 5_000_000);
        assert_eq!(tsc_khz(&t), 2_000_000);
        let t2 = VcpuTimeInfo { tsc_shift: -1, ..t };
        assert_eq!(tsc_khz(&t2), 4_000_000);
    }
}
