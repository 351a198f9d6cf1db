//! XCR0 (the XSAVE feature mask): the host's value and the switch to and from guests'.
//!
//! Neither the VMCS nor the VMCB holds XCR0. Each vCPU keeps its own (set by its guest's
//! XSETBV, checked architecturally first); it is loaded right before guest entry
//! ([`enter_guest`]) and the host's value is put back right after the exit
//! ([`leave_guest`]), each only when the two differ. The host's XCR0 is every component
//! the CPU supports (a superset of what any guest may enable): the hypervisor itself
//! uses no extended state (it is built soft-float), and with that value XSAVE/XRSTOR in
//! host context reach every component a guest could have touched (see [`super::fpu`]),
//! while a guest that enables everything (Linux does) costs no XSETBV at all.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// The host's XCR0 (0: no XSAVE).
static HOST_XCR0: AtomicU64 = AtomicU64::new(0);
/// Size of a standard-format XSAVE area for [`host_xcr0`] (512 without XSAVE: FXSAVE).
static AREA_SIZE: AtomicU64 = AtomicU64::new(512);

/// Prepares this CPU for saving and switching extended state: x87 and SSE usable
/// (CR0.EM/TS clear, CR4.OSFXSR), and with XSAVE, CR4.OSXSAVE and the host XCR0.
/// Call once per CPU. Returns whether the CPU has XSAVE.
pub fn init() -> bool {
    let has = CpuId::new()
        .get_feature_info()
        .is_some_and(|f| f.has_xsave());
    // SAFETY: these bits only make x87/SSE/XSAVE instructions usable and select native
    // FPU error reporting; the hypervisor's own code uses none of them, and no memory
    // mapping changes.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
        });
        Cr4::update(|f| {
            f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            if has {
                f.insert(Cr4Flags::OSXSAVE);
            }
        });
    }
    if has {
        let host = supported();
        // SAFETY: CR4.OSXSAVE is set above, and the value is exactly what CPUID 0xD says
        // the CPU supports, which XSETBV accepts; the hypervisor uses no extended state.
        unsafe { core::arch::x86_64::_xsetbv(0, host) };
        HOST_XCR0.store(host, Ordering::SeqCst);
        let component = |i| {
            let c = core::arch::x86_64::__cpuid_count(0xd, i);
            (c.eax, c.ebx)
        };
        // CPUID's own total (EBX, for the XCR0 in force) is not trusted alone: Bochs
        // reports one that ignores the MPX gap.
        let size = crate::hvm::cpuid::xsave_size(host, component)
            .max(core::arch::x86_64::__cpuid_count(0xd, 0).ebx);
        AREA_SIZE.store(u64::from(size.max(576)), Ordering::SeqCst);
    }
    has
}

/// The XCR0 bits this CPU supports (CPUID 0xD.0 EDX:EAX).
fn supported() -> u64 {
    let r = core::arch::x86_64::__cpuid_count(0xd, 0);
    u64::from(r.edx) << 32 | u64::from(r.eax)
}

/// The host's XCR0 (0 without XSAVE).
pub fn host_xcr0() -> u64 {
    HOST_XCR0.load(Ordering::Relaxed)
}

/// Bytes of a vCPU's extended-state save area (standard XSAVE format, or FXSAVE's 512).
pub fn area_size() -> u64 {
    AREA_SIZE.load(Ordering::Relaxed)
}

/// Checks a guest XCR0 value as XSETBV would (SDM Vol. 1 §13.3).
pub fn valid(value: u64, supported: u64) -> bool {
    const X87: u64 = 1;
    const SSE: u64 = 2;
    const AVX: u64 = 4;
    const MPX: u64 = 0x18;
    const AVX512: u64 = 0xe0;
    const AMX: u64 = 3 << 17;
    // IA32_XSS-only components (PT, PASID, CET, HDC, UINTR, LBR, HWP): never in XCR0.
    const SUPERVISOR: u64 = 1 << 8 | 0x1_fc00;
    value & X87 != 0
        && value & SUPERVISOR == 0
        && value & !supported == 0
        && (value & AVX == 0 || value & SSE != 0)
        && (value & MPX == 0 || value & MPX == MPX)
        && (value & AVX512 == 0 || (value & AVX512 == AVX512 && value & AVX != 0))
        && (value & AMX == 0 || value & AMX == AMX)
}

/// Checks a value a guest wants in XCR0 (the caller injects #GP on Err): every
/// architectural pairing rule, and only components of the host's XCR0 (what CPUID leaf
/// 0xD offers the guest, user components only), so the host's XSETBV that loads it at the
/// next entry cannot fault.
pub fn check_guest_xcr0(value: u64) -> Result<(), ()> {
    let host = host_xcr0();
    if host == 0 || !valid(value, host) {
        return Err(());
    }
    Ok(())
}

fn xsetbv(value: u64) {
    // SAFETY: callers pass the host's XCR0 or a guest value accepted by
    // `check_guest_xcr0` (a subset of the host's, architecturally valid), and CR4.OSXSAVE
    // is set whenever the host XCR0 is nonzero; the hypervisor uses no extended state.
    unsafe { core::arch::x86_64::_xsetbv(0, value) };
}

/// Loads a guest's XCR0 right before entry (nothing if it equals the host's).
#[inline]
pub fn enter_guest(guest: u64) {
    let host = host_xcr0();
    if host != 0 && guest != host {
        xsetbv(guest);
    }
}

/// Puts the host's XCR0 back right after an exit (nothing if the guest's equals it).
#[inline]
pub fn leave_guest(guest: u64) {
    let host = host_xcr0();
    if host != 0 && guest != host {
        xsetbv(host);
    }
}

/// As [`leave_guest`], for a backend whose XSETBV intercept may not work: first adopts
/// the XCR0 the guest left in the register as its value. QEMU 7.2 TCG does not implement
/// SVM's XSETBV intercept, so a guest's XSETBV runs without an exit there (the CPU
/// checked the value, so it is valid).
#[inline]
pub fn leave_guest_sync(guest: &mut u64) {
    let host = host_xcr0();
    if host == 0 {
        return;
    }
    // SAFETY: XGETBV(0) is valid with CR4.OSXSAVE set, which a nonzero host XCR0 implies;
    // it only reads.
    let real = unsafe { core::arch::x86_64::_xgetbv(0) };
    *guest = real;
    if real != host {
        xsetbv(host);
    }
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn xcr0_pairing_rules() {
        let all = 0x6_02ff;
        assert!(valid(1, all));
        assert!(valid(0x7, all));
        assert!(!valid(0, all), "x87 must be set");
        assert!(!valid(0x5, all), "AVX needs SSE");
        assert!(!valid(0x9, all), "MPX bits together");
        assert!(valid(0x19, all));
        assert!(!valid(0x23, all), "AVX-512 bits together");
        assert!(!valid(0xe3, all), "AVX-512 needs AVX");
        assert!(valid(0xe7, all));
        assert!(!valid(1 | 1 << 17, all), "AMX tile bits together");
        assert!(!valid(1 | 1 << 18, all), "AMX tile bits together");
        assert!(valid(1 | 3 << 17, all));
        assert!(!valid(1 | 1 << 9, 0x3), "unsupported component");
        assert!(!valid(1 | 1 << 8, all | 1 << 8 | 1 << 9), "supervisor PT");
    }
}
