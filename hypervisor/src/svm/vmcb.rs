//! The VMCB: layout (AMD APM Vol. 2, Appendix B) and access.
//!
//! Offsets are named constants; the VMCB is a hypervisor-owned 4 KiB frame reached
//! through the direct map with volatile accesses (the CPU reads and writes it on VMRUN and
//! #VMEXIT).
#![allow(unsafe_code)]

use crate::mm::phys;

/// Control area. The whole layout is listed, used or not: it is the ABI reference.
#[allow(dead_code)]
pub mod ctl {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE_PA: usize = 0x040;
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const V_INTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXITCODE: usize = 0x070;
    pub const EXITINFO1: usize = 0x078;
    pub const EXITINFO2: usize = 0x080;
    pub const EXITINTINFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENTINJ: usize = 0x0a8;
    /// Bit 0: LBR virtualization (DBGCTL and the LBR MSRs switched by VMRUN/#VMEXIT).
    pub const VIRT_EXT: usize = 0x0b8;
    pub const N_CR3: usize = 0x0b0;
    pub const VMCB_CLEAN: usize = 0x0c0;
    pub const NEXT_RIP: usize = 0x0c8;
    /// Decode assists: number of instruction bytes fetched (0..=15), then the bytes.
    pub const INSN_LEN: usize = 0x0d0;
    pub const INSN_BYTES: usize = 0x0d1;
}

/// State-save area (starts at 0x400).
#[allow(dead_code)]
pub mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
    pub const DBGCTL: usize = 0x670;
}

/// Exit codes (APM Vol. 2, Appendix C).
pub mod exit {
    /// CR writes: 0x10 + n for CRn; CR0_SEL_WRITE: a CR0 write changing more than TS/MP.
    pub const WRITE_CR0: u64 = 0x10;
    pub const WRITE_CR3: u64 = 0x13;
    pub const WRITE_CR4: u64 = 0x14;
    pub const CR0_SEL_WRITE: u64 = 0x65;
    /// Exception intercepts: 0x40 + vector.
    pub const EXCP_DB: u64 = 0x41;
    pub const EXCP_AC: u64 = 0x51;
    pub const EXCP_MC: u64 = 0x52;
    pub const RDPMC: u64 = 0x6f;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// A segment register in the VMCB's compressed format.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub selector: u16,
    /// Access byte in bits 0..7, AVL/L/DB/G in bits 8..11.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// One VMCB, by physical address.
pub struct Vmcb {
    pa: u64,
}

impl Vmcb {
    /// Wraps a zeroed, page-aligned frame the caller owns for the VMCB's lifetime.
    pub fn new(pa: u64) -> Vmcb {
        assert!(pa.is_multiple_of(4096));
        Vmcb { pa }
    }

    /// Physical address, for VMRUN.
    pub fn pa(&self) -> u64 {
        self.pa
    }

    fn ptr(&self, off: usize, size: usize) -> *mut u8 {
        assert!(off + size <= 4096 && off.is_multiple_of(size));
        phys::to_virt(self.pa + off as u64)
    }

    pub fn read64(&self, off: usize) -> u64 {
        // SAFETY: `ptr` checked the field lies inside this VMCB frame and is naturally
        // aligned; the frame belongs to this vCPU and the CPU does not touch it while the
        // hypervisor runs (outside VMRUN).
        unsafe { self.ptr(off, 8).cast::<u64>().read_volatile() }
    }

    pub fn write64(&mut self, off: usize, v: u64) {
        // SAFETY: as for `read64`.
        unsafe { self.ptr(off, 8).cast::<u64>().write_volatile(v) }
    }

    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: as for `read64`.
        unsafe { self.ptr(off, 4).cast::<u32>().read_volatile() }
    }

    pub fn write32(&mut self, off: usize, v: u32) {
        // SAFETY: as for `read64`.
        unsafe { self.ptr(off, 4).cast::<u32>().write_volatile(v) }
    }

    pub fn read8(&self, off: usize) -> u8 {
        // SAFETY: as for `read64`.
        unsafe { self.ptr(off, 1).read_volatile() }
    }

    pub fn write8(&mut self, off: usize, v: u8) {
        // SAFETY: as for `read64`.
        unsafe { self.ptr(off, 1).write_volatile(v) }
    }

    pub fn set_segment(&mut self, off: usize, s: Segment) {
        self.write64(
            off,
            u64::from(s.selector) | u64::from(s.attrib) << 16 | u64::from(s.limit) << 32,
        );
        self.write64(off + 8, s.base);
    }

    pub fn segment(&self, off: usize) -> Segment {
        let w = self.read64(off);
        Segment {
            selector: w as u16,
            attrib: (w >> 16) as u16,
            limit: (w >> 32) as u32,
            base: self.read64(off + 8),
        }
    }
}
