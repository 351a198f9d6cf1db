//! The host's CR4 paging bits, matched to the guest's before each SVM entry.
//!
//! QEMU's TCG drops its whole software TLB and jump cache whenever CR4's paging bits (PGE,
//! PSE, SMEP, SMAP, and PAE and LA57, which always agree here) differ across VMRUN or
//! #VMEXIT, on top of the flush for CR3: two more full flushes per exit, about a fifth of
//! an exit's cost there. So before entering a guest, the host's CR4 takes the guest's
//! PGE, PSE, SMEP and SMAP (a CR4 write only when they differ, that is when a vCPU with
//! other bits last ran here). For the hypervisor they change nothing: its page tables
//! have no user pages (SMEP and SMAP act on those only) and no global entries (PGE only
//! lets those outlive a CR3 load), and PSE is ignored with PAE on. On hardware it costs a
//! CR4 read per entry.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr4, Cr4Flags};

/// The bits taken from the guest, as far as this CPU has them ([`init`]).
static MIRRORED: AtomicU64 = AtomicU64::new(0);

/// Finds which of PGE, PSE, SMEP and SMAP the CPU has. Once, on the boot CPU (the others
/// have the same features, which SMP start-up checks).
pub fn init() {
    let cpuid = CpuId::new();
    let mut bits = Cr4Flags::empty();
    if let Some(f) = cpuid.get_feature_info() {
        bits.set(Cr4Flags::PAGE_GLOBAL, f.has_pge());
        bits.set(Cr4Flags::PAGE_SIZE_EXTENSION, f.has_pse());
    }
    if let Some(f) = cpuid.get_extended_feature_info() {
        bits.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, f.has_smep());
        bits.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, f.has_smap());
    }
    MIRRORED.store(bits.bits(), Ordering::Relaxed);
}

/// Gives this CPU's CR4 the PGE, PSE, SMEP and SMAP bits of `guest` (the CR4 of the vCPU
/// about to be entered), where the CPU has them.
pub fn match_guest(guest: u64) {
    let mask = MIRRORED.load(Ordering::Relaxed);
    let cur = Cr4::read_raw();
    let want = (cur & !mask) | (guest & mask);
    if want != cur {
        // SAFETY: only bits the CPU has (`init`) change, and none changes what the
        // hypervisor's accesses do: its page tables hold neither user nor global entries
        // (pagetable's host format), so SMEP/SMAP have no page to act on and PGE no entry
        // to keep across a CR3 load, and PSE is ignored in long mode.
        unsafe { Cr4::write_raw(want) };
    }
}
