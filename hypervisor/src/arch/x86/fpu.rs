//! Per-vCPU extended state (x87, SSE, AVX, ... : everything XSAVE manages).
//!
//! Each vCPU owns an [`ExtState`]: a save area of frames (so 64-byte aligned), initialised
//! to the architectural init state (a zeroed XSAVE header means "every component in its
//! init state"; the legacy area holds FCW 0x37f and MXCSR 0x1f80 as after reset). The
//! backends save it when the vCPU stops running on a CPU (`Vcpu::put`) and restore it
//! when it starts (`Vcpu::load`). Both happen in host context, where XCR0 holds the
//! host's value, i.e. every supported component ([`super::xcr`]): so XSAVE saves, and
//! XRSTOR restores or initialises, every component any guest could have enabled, and no
//! state of one vCPU can show through in another's registers, even after it changes
//! XCR0. Without XSAVE, FXSAVE/FXRSTOR (x87 + SSE) are used.
//!
//! The per-CPU `fpu_owner` records which save area the registers currently match; with
//! the CPU the area was last loaded or saved on, a vCPU loaded again on the same CPU
//! with no other vCPU in between skips the XRSTOR.
#![allow(unsafe_code)]

use super::percpu;
use super::xcr;
use crate::mm::phys;
use core::sync::atomic::Ordering;

/// A vCPU's extended-state save area.
pub struct ExtState {
    pa: u64,
    frames: u64,
    /// The CPU whose registers last held this state (u32::MAX: none).
    cpu: u32,
}

impl ExtState {
    /// Frames the area takes.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Allocates an area in the init state; None when out of memory.
    pub fn new() -> Option<ExtState> {
        let frames = xcr::area_size().div_ceil(4096).max(1);
        let pa = phys::alloc_zeroed(frames, 1)?;
        let s = ExtState {
            pa,
            frames,
            cpu: u32::MAX,
        };
        s.write_reset_values();
        Some(s)
    }

    /// Back to the init state (as after INIT/reset).
    pub fn reset(&mut self) {
        // SAFETY: the area is this object's own frames, in the direct map.
        unsafe { core::ptr::write_bytes(phys::to_virt(self.pa), 0, (self.frames * 4096) as usize) };
        self.write_reset_values();
        self.forget();
    }

    fn write_reset_values(&self) {
        let p = phys::to_virt(self.pa);
        // SAFETY: FCW (offset 0, u16) and MXCSR (offset 24, u32) of the legacy area lie in
        // this object's first frame, naturally aligned.
        unsafe {
            p.cast::<u16>().write_volatile(0x37f);
            p.add(24).cast::<u32>().write_volatile(0x1f80);
        }
    }

    /// The token identifying this area as the per-CPU `fpu_owner`.
    #[allow(dead_code)] // for diagnostics
    pub fn token(&self) -> u64 {
        self.pa
    }

    /// Saves this CPU's extended state into the area (host XCR0 in force).
    pub fn save(&mut self) {
        let va = phys::to_virt(self.pa);
        if xcr::host_xcr0() != 0 {
            // SAFETY: the area is 4 KiB aligned and `area_size` covers every component of
            // the host XCR0 (RFBM = XCR0 & all-ones); CR4.OSXSAVE is set, CR0.TS clear.
            unsafe {
                core::arch::asm!("xsave64 [{}]", in(reg) va, in("eax") u32::MAX,
                    in("edx") u32::MAX, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: 512 bytes, 16-byte aligned, owned by this object; CR0.EM/TS clear.
            unsafe {
                core::arch::asm!("fxsave64 [{}]", in(reg) va, options(nostack, preserves_flags))
            };
        }
        let pc = percpu::this();
        pc.fpu_owner.store(self.pa, Ordering::Relaxed);
        self.cpu = pc.index;
    }

    /// Loads the area into this CPU's registers (host XCR0 in force), unless they already
    /// hold it.
    pub fn restore(&mut self) {
        let pc = percpu::this();
        if pc.fpu_owner.load(Ordering::Relaxed) == self.pa && self.cpu == pc.index {
            return;
        }
        self.restore_always();
        pc.fpu_owner.store(self.pa, Ordering::Relaxed);
        self.cpu = pc.index;
    }

    fn restore_always(&self) {
        let va = phys::to_virt(self.pa);
        if xcr::host_xcr0() != 0 {
            // SAFETY: the area was initialised (valid header: XSTATE_BV only ever holds
            // bits XSAVE wrote under the same host XCR0, XCOMP_BV 0; MXCSR valid) and is
            // large and aligned enough; XRSTOR only loads registers.
            unsafe {
                core::arch::asm!("xrstor64 [{}]", in(reg) va, in("eax") u32::MAX,
                    in("edx") u32::MAX, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: a valid FXSAVE image (reset values or one FXSAVE wrote).
            unsafe {
                core::arch::asm!("fxrstor64 [{}]", in(reg) va, options(nostack, preserves_flags))
            };
        }
    }

    /// Marks the registers as no longer this area's (it is about to be reset, freed, or
    /// loaded elsewhere).
    pub fn forget(&mut self) {
        self.cpu = u32::MAX;
        let _ = percpu::this().fpu_owner.compare_exchange(
            self.pa,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl Drop for ExtState {
    fn drop(&mut self) {
        self.forget();
        phys::free_frames(self.pa, self.frames);
    }
}
