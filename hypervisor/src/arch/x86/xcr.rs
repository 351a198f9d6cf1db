//! XCR0 (the XSAVE feature mask) on behalf of guests.
//!
//! Neither the VMCS nor the VMCB holds XCR0, so a guest's XSETBV is emulated by executing
//! it on the host after checking the value against what the CPU supports; the hypervisor
//! itself uses no extended state (it is built soft-float), so it can run with any XCR0.

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr4, Cr4Flags};

/// Enables XSETBV in the hypervisor (CR4.OSXSAVE) if the CPU has XSAVE. Call once per CPU.
pub fn init() -> bool {
    let has = CpuId::new()
        .get_feature_info()
        .is_some_and(|f| f.has_xsave());
    if has {
        // SAFETY: setting OSXSAVE only enables the XGETBV/XSETBV instructions; it changes
        // no memory mapping and the hypervisor's own code uses no extended state.
        unsafe { Cr4::update(|f| f.insert(Cr4Flags::OSXSAVE)) };
    }
    has
}

/// The XCR0 bits this CPU supports (CPUID 0xD.0 EDX:EAX).
fn supported() -> u64 {
    let r = core::arch::x86_64::__cpuid_count(0xd, 0);
    u64::from(r.edx) << 32 | u64::from(r.eax)
}

/// Checks a guest XCR0 value as XSETBV would (SDM Vol. 1 §13.3).
pub fn valid(value: u64, supported: u64) -> bool {
    const X87: u64 = 1;
    const SSE: u64 = 2;
    const AVX: u64 = 4;
    const AVX512: u64 = 0xe0;
    value & X87 != 0
        && value & !supported == 0
        && (value & AVX == 0 || value & SSE != 0)
        && (value & AVX512 == 0 || (value & AVX512 == AVX512 && value & AVX != 0))
}

/// The XCR0 in force (the last value a guest loaded); 0 without XSAVE.
pub fn current() -> u64 {
    if !Cr4::read().contains(Cr4Flags::OSXSAVE) {
        return 0;
    }
    // SAFETY: XGETBV(0) is valid whenever CR4.OSXSAVE is set (checked above) and has no
    // side effects.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

/// Loads a guest's XCR0, or refuses it (the caller injects #GP).
pub fn set_guest_xcr0(value: u64) -> Result<(), ()> {
    if !Cr4::read().contains(Cr4Flags::OSXSAVE) || !valid(value, supported()) {
        return Err(());
    }
    // SAFETY: the value passed the architectural checks above, so XSETBV cannot fault,
    // and XCR0 does not affect the hypervisor (no extended state in use).
    unsafe { core::arch::x86_64::_xsetbv(0, value) };
    Ok(())
}
