//! Guest registers that only the CPU holds, switched with their vCPU.
//!
//! Neither backend intercepts MOV to or from DRn, so a guest reads and writes the
//! physical DR0-DR3 directly. On VMX the same goes for DR6 (the VMCS holds only DR7) and
//! CR2 (a guest page fault delivered without an exit writes the CPU's CR2, which the
//! guest's handler reads later); the VMCB holds DR6, DR7 and CR2. When several vCPUs share
//! a CPU, each must find its own values again (a handler preempted before it reads CR2
//! would otherwise see another vCPU's fault address), and no domain may read another's.
//! A vCPU's values are read back when it is put and written when it is loaded, each only
//! if it differs from what the CPU holds (reads are cheap, and guests rarely change these
//! registers while another vCPU runs in between, so writes are rare). The hypervisor sets
//! no breakpoints and host DR7 is 0x400 after every exit on both backends, so guest
//! addresses left in DR0-DR3 never fire in host context; it takes no page fault it
//! recovers from, so nothing of the host's reads CR2.
#![allow(unsafe_code)]

use core::arch::asm;

/// DR6 at reset (every status bit clear).
pub const DR6_RESET: u64 = 0xffff_0ff0;

/// A vCPU's DR0-DR3 and, for a backend whose control block does not hold them, DR6
/// and CR2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldRegs {
    pub dr: [u64; 4],
    pub dr6: u64,
    pub cr2: u64,
}

impl Default for HeldRegs {
    /// The values after INIT.
    fn default() -> Self {
        HeldRegs {
            dr: [0; 4],
            dr6: DR6_RESET,
            cr2: 0,
        }
    }
}

/// Which registers a backend leaves to [`HeldRegs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// DR0-DR3 (SVM: the VMCB holds DR6 and CR2).
    Dr0To3,
    /// DR0-DR3, DR6 and CR2 (VMX).
    Dr0To3Dr6Cr2,
}

macro_rules! read_dr {
    ($n:literal) => {{
        let v: u64;
        // SAFETY: reading a debug register in ring 0 has no side effect.
        unsafe {
            asm!(concat!("mov {}, dr", $n), out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }};
}

macro_rules! write_dr_if_changed {
    ($n:literal, $v:expr) => {{
        let v: u64 = $v;
        if read_dr!($n) != v {
            // SAFETY: DR0-DR3 hold addresses and DR6 status bits: neither changes a mapping
            // or the host's control flow (host DR7 enables no breakpoint, see the module
            // comment); the value is the guest's own, put back before its vCPU runs.
            unsafe {
                asm!(concat!("mov dr", $n, ", {}"), in(reg) v, options(nomem, nostack, preserves_flags))
            };
        }
    }};
}

/// Reads CR2.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

impl HeldRegs {
    /// Reads the registers `which` names from the CPU.
    pub fn save(&mut self, which: Held) {
        self.dr = [read_dr!(0), read_dr!(1), read_dr!(2), read_dr!(3)];
        if which == Held::Dr0To3Dr6Cr2 {
            self.dr6 = read_dr!(6);
            self.cr2 = read_cr2();
        }
    }

    /// Puts the registers `which` names in the CPU, writing only those that differ.
    pub fn restore(&self, which: Held) {
        write_dr_if_changed!(0, self.dr[0]);
        write_dr_if_changed!(1, self.dr[1]);
        write_dr_if_changed!(2, self.dr[2]);
        write_dr_if_changed!(3, self.dr[3]);
        if which == Held::Dr0To3Dr6Cr2 {
            write_dr_if_changed!(6, self.dr6);
            if read_cr2() != self.cr2 {
                // SAFETY: CR2 only reports the last page-fault address; nothing of the
                // host's reads it (see the module comment).
                unsafe {
                    asm!("mov cr2, {}", in(reg) self.cr2, options(nomem, nostack, preserves_flags))
                };
            }
        }
    }
}
