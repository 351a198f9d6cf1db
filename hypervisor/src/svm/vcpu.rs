//! An SVM vCPU: its VMCB, the PVH and INIT-SIPI start states, hardware context
//! (ASID by generation, extended state, XCR0), and exit decoding.
//!
//! Host interrupts: INTR is intercepted and V_INTR_MASKING is set, so the host's IF
//! (the value saved at VMRUN, which `entry` sets to 1 inside the CLGI window) governs
//! physical interrupts while the guest runs: one arriving ends the guest with #VMEXIT
//! (INTR). The entry code clears IF again before STGI, so the interrupt stays pending
//! until [`Vcpu::run`] takes it with `irq::take_pending` and reports
//! `Exit::ExternalInterrupt`. An NMI exit needs nothing: the NMI is held while GIF = 0
//! and delivered to the host's NMI handler (which counts it) at STGI.
//!
//! Guest interrupts: an external interrupt goes in as a virtual interrupt (V_IRQ with its
//! vector), never as an EVENTINJ of type INTR. QEMU 7.2 TCG delivers an injected INTR
//! inside VMRUN but leaves its vector as the CPU's pending exception; a kick of that
//! vCPU thread before its next exception or exit delivers the vector a second time, at
//! whatever instruction the guest is on, even with interrupts off (seen as Linux taking
//! its upcall vector again on the first instruction of its own handler, before SWAPGS:
//! dom0 then faulted on every per-CPU access). The generic code injects only when the
//! guest can take an interrupt, so the V_IRQ is taken at once; it counts as queued until
//! an exit finds it taken.
//!
//! XCR0: the guest's value is loaded right before VMRUN and read back right after the
//! exit (then the host's is restored), because QEMU 7.2 TCG ignores the XSETBV intercept:
//! there the guest's XSETBV takes effect without an exit.
#![allow(unsafe_code)]

use super::entry;
use super::vmcb::{ctl, exit, save, Segment, Vmcb};
use crate::arch::x86::fpu::ExtState;
use crate::arch::x86::held::{Held, HeldRegs};
use crate::arch::x86::{irq, percpu, spec, xcr};
use crate::hvm::asid::TlbTag;
use crate::hvm::crcheck::{self, CrPolicy, CrState};
use crate::hvm::crdecode;
use crate::hvm::msr;
use crate::hvm::{
    Access, ControlState, EmulationState, Event, Exit, GuestRegs, IoAccess, PvhEntry, StartState,
    Vcpu, VcpuStart,
};
use crate::mm::phys::{self, DirectMap};
use core::sync::atomic::Ordering;
use pagetable::{Npt, PageTable};

/// Intercepts in the first misc vector: INTR, NMI, INIT, RDPMC, CPUID, INVD, HLT, INVLPGA,
/// IOIO, MSR, SHUTDOWN.
const MISC1: u32 = 1 << 0
    | 1 << 1
    | 1 << 3
    | 1 << 15
    | 1 << 18
    | 1 << 22
    | 1 << 24
    | 1 << 26
    | 1 << 27
    | 1 << 28
    | 1 << 31;
/// Intercepted CR writes: CR0 (MOV, LMSW, CLTS), CR3 and CR4. Each is checked as the
/// hardware would (`hvm::crcheck`): an emulator may not (QEMU 7.2 TCG lets reserved CR3/CR4
/// bits through to a failing VMRUN and ignores CR0 bits 63:32, which its selective CR0
/// intercept does not see either), and CR4 bits the guest's CPUID does not offer must fault
/// even where the CPU has them. Guests rarely write CR0 or CR4.
const CR_INTERCEPTS: u32 = 1 << 16 | 1 << (16 + 3) | 1 << (16 + 4);
/// The control domain's: CR3 writes (every context switch, and two per code patch of a
/// booting Linux: about 17,000 exits in dom0's boot) go to the CPU, as with Xen on NPT.
/// On hardware the CPU checks them itself; only an emulator's missing reserved-bit check
/// is not papered over for the trusted domain (a bad CR3 would fail its next VMRUN and
/// crash it, as the domain's own error).
const CR_INTERCEPTS_CONTROL: u32 = CR_INTERCEPTS & !(1 << (16 + 3));
/// Intercepted exceptions: #DB and #AC (reflected: their unintercepted recursive delivery
/// can hold a CPU in microcode for ever, XSA-156), #MC (logged).
const EXCEPTIONS: u32 = 1 << 1 | 1 << 17 | 1 << 18;
/// TSC_AUX, held per vCPU and loaded while it is (RDPID reads it without an exit).
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// Second vector: VMRUN (architecturally required), VMMCALL, VMLOAD, VMSAVE, STGI, CLGI,
/// SKINIT, WBINVD, MONITOR, MWAIT, XSETBV.
const MISC2: u32 = 1 << 0
    | 1 << 1
    | 1 << 2
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 9
    | 1 << 10
    | 1 << 11
    | 1 << 13;
/// The VINTR intercept bit in MISC1, used for interrupt windows.
const MISC1_VINTR: u32 = 1 << 4;
/// The IRET intercept bit in MISC1: on while the guest handles an NMI we injected.
const MISC1_IRET: u32 = 1 << 20;
/// EVENTINJ type NMI, vector 2.
const EVENT_NMI: u64 = 2 << 8 | 2;
const V_IRQ: u64 = 1 << 8;
const V_IGN_TPR: u64 = 1 << 20;
const V_INTR_MASKING: u64 = 1 << 24;
const EFER_SVME: u64 = 1 << 12;
/// The architectural power-on PAT.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
const EVENT_VALID: u64 = 1 << 31;

/// One virtual CPU on SVM.
pub struct SvmVcpu {
    vmcb: Vmcb,
    regs: GuestRegs,
    /// ASIDs the CPU offers (valid guest ASIDs are 1..max_asid).
    max_asid: u32,
    /// The ASID in the VMCB and where it is valid.
    asid: Option<TlbTag>,
    /// Extended state (x87/SSE/AVX...) while not loaded.
    ext: ExtState,
    /// DR0-DR3 while not loaded (the VMCB holds DR6, DR7 and CR2).
    held: HeldRegs,
    /// The guest's XCR0.
    xcr0: u64,
    /// Loaded on this CPU (between `load` and `put`).
    loaded: bool,
    /// Created waiting for SIPI and not yet started.
    waiting_for_sipi: bool,
    nrips: bool,
    /// The CPU fills in the faulting instruction's bytes on nested page faults.
    decode_assists: bool,
    /// Length of the instruction behind the last exit, when known.
    insn_len: u64,
    /// Next RIP reported by an IOIO exit.
    io_next_rip: u64,
    /// The guest's TSC_AUX, and the host's while the guest's is loaded.
    tsc_aux: u64,
    host_tsc_aux: u64,
    /// NMI blocking, which SVM (without vNMI) leaves to the hypervisor: set when an NMI is
    /// injected, lifted once the guest's IRET has executed.
    nmi: NmiBlocking,
    /// The VINTR window is wanted for an interrupt, and for a held NMI.
    irq_window: bool,
    nmi_window: bool,
    /// A V_IRQ carries an interrupt to deliver (not a window request); while it waits,
    /// no other interrupt is injected and window requests wait for it to be taken.
    virq_queued: bool,
    /// Which CR4/EFER bits the guest's CPUID offers, and its MAXPHYADDR.
    policy: CrPolicy,
    /// TLB_CONTROL can flush one ASID (3, 7) rather than all (1).
    flush_by_asid: bool,
    /// The guest's IA32_DEBUGCTL (LBR, BTF). With LBR virtualization it lives in the VMCB
    /// and VMRUN switches it; without, it is loaded into the MSR around VMRUN when it
    /// differs from the host's (`host_debugctl`, read at `load`).
    debugctl: u64,
    host_debugctl: u64,
    lbr_virt: bool,
}

/// Where the guest is in handling an injected NMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NmiBlocking {
    None,
    /// In the handler; the IRET intercept is on.
    Handler,
    /// The IRET at this RIP exited and is about to run; NMIs unblock at the first exit
    /// with RIP elsewhere.
    Iret(u64),
}

impl SvmVcpu {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        vmcb_pa: u64,
        ext: ExtState,
        iopm: u64,
        msrpm: u64,
        max_asid: u32,
        ncr3: u64,
        nrips: bool,
        decode_assists: bool,
        privilege: crate::hvm::Privilege,
        start: VcpuStart,
    ) -> SvmVcpu {
        let mut v = Vmcb::new(vmcb_pa);
        // CPUID Fn8000_000A EDX: LBR virtualization (1), flush by ASID (6).
        let svm_features = core::arch::x86_64::__cpuid(0x8000_000a).edx;
        v.write32(
            ctl::INTERCEPT_CR,
            match privilege {
                crate::hvm::Privilege::Control => CR_INTERCEPTS_CONTROL,
                crate::hvm::Privilege::Unprivileged => CR_INTERCEPTS,
            },
        );
        v.write32(ctl::INTERCEPT_MISC1, MISC1);
        v.write32(ctl::INTERCEPT_MISC2, MISC2);
        v.write32(ctl::INTERCEPT_EXCEPTIONS, EXCEPTIONS);
        v.write64(ctl::IOPM_BASE_PA, iopm);
        v.write64(ctl::MSRPM_BASE_PA, msrpm);
        // The ASID is assigned by `load`; 0 (the host's) would fail VMRUN if it were not.
        v.write32(ctl::GUEST_ASID, 0);
        v.write8(ctl::TLB_CONTROL, 0);
        // V_INTR_MASKING: physical interrupts follow the host's IF, not the guest's.
        v.write64(ctl::V_INTR, V_INTR_MASKING | V_IGN_TPR);
        v.write64(ctl::NP_ENABLE, 1);
        v.write64(ctl::N_CR3, ncr3);
        v.write64(save::G_PAT, DEFAULT_PAT);
        let mut vcpu = SvmVcpu {
            vmcb: v,
            regs: GuestRegs::default(),
            max_asid,
            asid: None,
            ext,
            held: HeldRegs::default(),
            xcr0: 1,
            loaded: false,
            waiting_for_sipi: false,
            nrips,
            decode_assists,
            insn_len: 0,
            io_next_rip: 0,
            tsc_aux: 0,
            host_tsc_aux: 0,
            nmi: NmiBlocking::None,
            irq_window: false,
            nmi_window: false,
            virq_queued: false,
            policy: CrPolicy::for_guests(),
            flush_by_asid: svm_features & (1 << 6) != 0,
            debugctl: 0,
            host_debugctl: 0,
            lbr_virt: svm_features & (1 << 1) != 0,
        };
        if vcpu.lbr_virt {
            vcpu.vmcb.write64(ctl::VIRT_EXT, 1);
        }
        match start {
            VcpuStart::Pvh(entry) => vcpu.pvh_state(entry),
            VcpuStart::WaitForSipi => {
                vcpu.reset_to_sipi(0);
                vcpu.waiting_for_sipi = true;
            }
        }
        vcpu
    }

    /// PVH start state: 32-bit protected mode, paging off, flat segments, EBX = start info.
    fn pvh_state(&mut self, entry: PvhEntry) {
        let v = &mut self.vmcb;
        let code = Segment {
            selector: 0x10,
            attrib: 0xc9b,
            limit: 0xffff_ffff,
            base: 0,
        };
        let data = Segment {
            selector: 0x18,
            attrib: 0xc93,
            limit: 0xffff_ffff,
            base: 0,
        };
        v.set_segment(save::CS, code);
        for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            v.set_segment(seg, data);
        }
        v.set_segment(
            save::TR,
            Segment {
                selector: 0x20,
                attrib: 0x08b,
                limit: 0x67,
                base: 0,
            },
        );
        v.set_segment(
            save::LDTR,
            Segment {
                selector: 0,
                attrib: 0x082,
                limit: 0xffff,
                base: 0,
            },
        );
        v.set_segment(
            save::GDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: 0xffff,
                base: 0,
            },
        );
        v.set_segment(
            save::IDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: 0xffff,
                base: 0,
            },
        );
        v.write8(save::CPL, 0);
        v.write64(save::EFER, EFER_SVME);
        v.write64(save::CR0, 0x11); // PE | ET
        v.write64(save::CR4, 0);
        v.write64(save::CR3, 0);
        v.write64(save::DR7, 0x400);
        v.write64(save::DR6, 0xffff_0ff0);
        v.write64(save::RFLAGS, 0x2);
        v.write64(save::RIP, u64::from(entry.rip));
        self.regs = GuestRegs {
            rbx: u64::from(entry.rbx),
            ..GuestRegs::default()
        };
    }

    fn set_misc1(&mut self, bit: u32, on: bool) {
        let misc1 = self.vmcb.read32(ctl::INTERCEPT_MISC1);
        let new = if on { misc1 | bit } else { misc1 & !bit };
        if new != misc1 {
            self.vmcb.write32(ctl::INTERCEPT_MISC1, new);
        }
    }

    /// Programs the VINTR window (an exit as soon as the guest could take an interrupt)
    /// for what wants it: an interrupt, or an NMI held by a shadow or an injection, or by
    /// an IRET about to run with IF clear.
    fn update_vintr(&mut self) {
        if self.virq_queued {
            // The V_IRQ is an interrupt on its way (a VINTR intercept would turn it into
            // an exit): the window is programmed once an exit finds it taken.
            self.set_misc1(MISC1_VINTR, false);
            return;
        }
        let for_nmi = self.nmi_window
            && match self.nmi {
                NmiBlocking::None => true,
                NmiBlocking::Handler => false,
                NmiBlocking::Iret(_) => self.vmcb.read64(save::RFLAGS) & (1 << 9) == 0,
            };
        let on = self.irq_window || for_nmi;
        self.set_misc1(MISC1_VINTR, on);
        let vintr = self.vmcb.read64(ctl::V_INTR);
        let new = if on { vintr | V_IRQ } else { vintr & !V_IRQ };
        if new != vintr {
            self.vmcb.write64(ctl::V_INTR, new);
        }
    }

    /// The event the CPU was delivering when the exit happened must be delivered again:
    /// an external interrupt (one of our V_IRQs) through a V_IRQ again, anything else
    /// through EVENTINJ. Then, if the queued V_IRQ has been taken, the interrupt window
    /// can be programmed again.
    fn requeue_interrupted_event(&mut self) {
        let info = self.vmcb.read64(ctl::EXITINTINFO);
        if info & EVENT_VALID != 0 {
            if info & (7 << 8) == 0 {
                self.queue_virq(info as u8);
            } else if self.vmcb.read64(ctl::EVENTINJ) & EVENT_VALID == 0 {
                self.vmcb.write64(ctl::EVENTINJ, info);
            }
        }
        if self.virq_queued && self.vmcb.read64(ctl::V_INTR) & V_IRQ == 0 {
            self.virq_queued = false;
            self.update_vintr();
        }
    }

    /// Queues external interrupt `vector` as a V_IRQ (see the module documentation): the
    /// guest takes it as soon as its IF allows, whatever the TPR (V_IGN_TPR).
    fn queue_virq(&mut self, vector: u8) {
        self.virq_queued = true;
        self.set_misc1(MISC1_VINTR, false);
        let vintr = self.vmcb.read64(ctl::V_INTR);
        // Bits 0..31: V_TPR, V_IRQ, V_INTR_PRIO (19:16), V_IGN_TPR, V_INTR_MASKING;
        // bits 32..39: the vector.
        let keep = vintr & (V_INTR_MASKING | 0xff);
        self.vmcb.write64(
            ctl::V_INTR,
            keep | V_IRQ | 0xf << 16 | V_IGN_TPR | u64::from(vector) << 32,
        );
    }

    fn decode(&mut self) -> Exit {
        let code = self.vmcb.read64(ctl::EXITCODE);
        let info1 = self.vmcb.read64(ctl::EXITINFO1);
        let info2 = self.vmcb.read64(ctl::EXITINFO2);
        // Instruction lengths without next-RIP save: each intercepted instruction has
        // one fixed encoding (prefixes on these are architecturally meaningless).
        self.insn_len = match code {
            exit::CPUID | exit::INVD | exit::WBINVD | exit::MSR => 2,
            exit::HLT => 1,
            exit::VMMCALL | exit::XSETBV => 3,
            _ => 0,
        };
        match code {
            exit::CPUID => Exit::Cpuid,
            exit::HLT => Exit::Hlt,
            exit::VMMCALL => Exit::Hypercall,
            exit::MSR => Exit::Msr {
                write: info1 & 1 != 0,
            },
            exit::XSETBV => Exit::Xsetbv,
            exit::INVD | exit::WBINVD => Exit::CacheFlush,
            exit::IOIO => {
                self.io_next_rip = info2;
                Exit::Io(IoAccess {
                    port: (info1 >> 16) as u16,
                    size: match (info1 >> 4) & 7 {
                        1 => 1,
                        2 => 2,
                        _ => 4,
                    },
                    write: info1 & 1 == 0,
                    string: info1 & (1 << 2) != 0,
                    rep: info1 & (1 << 3) != 0,
                })
            }
            exit::NPF => Exit::NestedPageFault {
                gpa: info2,
                // EXITINFO1 (APM vol. 2, 15.25.6): bit 1 write, bit 4 instruction fetch,
                // bit 33 the fault hit the guest's page-table walk.
                access: Access {
                    read: info1 & (2 | 16) == 0,
                    write: info1 & 2 != 0,
                    execute: info1 & 16 != 0,
                    page_walk: info1 & (1 << 33) != 0,
                },
                gla: None,
            },
            exit::INTR | exit::NMI | exit::INIT => Exit::ExternalInterrupt,
            exit::VINTR => {
                // One exit per request: the generic code asks again if it still needs one.
                self.irq_window = false;
                self.nmi_window = false;
                self.update_vintr();
                Exit::InterruptWindow
            }
            exit::SHUTDOWN => Exit::TripleFault,
            // Some emulators store VMEXIT_INVALID (-1) as a 32-bit value.
            exit::INVALID | 0xffff_ffff => Exit::EntryFailed {
                reason: "VMCB state failed VMRUN consistency checks (VMEXIT_INVALID)",
                detail: code,
            },
            _ => Exit::Unhandled {
                code,
                qualification: info1,
            },
        }
    }

    fn next_rip(&self) -> u64 {
        let rip = self.vmcb.read64(save::RIP);
        if self.nrips {
            let n = self.vmcb.read64(ctl::NEXT_RIP);
            if n != 0 {
                return n;
            }
        }
        // A guest may run at the top of the address space: the next RIP wraps.
        let next = rip.wrapping_add(self.insn_len);
        if self.vmcb.read64(save::EFER) & (1 << 10) != 0
            && self.vmcb.segment(save::CS).attrib & (1 << 9) != 0
        {
            next
        } else {
            next & 0xffff_ffff
        }
    }
}

/// Guest-physical memory read through the nested page table (for instruction fetches and
/// guest page walks in the CR-write emulation).
struct NptMem(u64);

impl NptMem {
    /// Reads `buf.len()` bytes at `gpa`, which must not cross a 4 KiB page; None if the
    /// page is not mapped for the guest.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        if (gpa & 0xfff) + buf.len() as u64 > 4096 {
            return None;
        }
        let t = PageTable::<Npt>::from_root(self.0).translate(&DirectMap, gpa)?;
        // Only write-back leaves are RAM in the direct map (device MMIO is uncacheable).
        if t.memtype != pagetable::MemType::WriteBack
            || t.phys.checked_add(buf.len() as u64)? > phys::mapped_limit()
        {
            return None;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the nested page table maps `gpa` to `t.phys`, a frame of this guest's
            // memory inside the direct map (checked above, `buf` stays in the page); the
            // guest may change it concurrently, so each byte is one volatile load.
            *b = unsafe { phys::to_virt(t.phys + i as u64).read_volatile() };
        }
        Some(())
    }
}

impl guest_walk::GuestPhysRead for NptMem {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Some(u64::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read(gpa, &mut b)?;
        Some(u32::from_le_bytes(b))
    }
}

impl SvmVcpu {
    /// The guest's control state for `crcheck`.
    fn cr_state(&self) -> CrState {
        CrState {
            cr0: self.vmcb.read64(save::CR0),
            cr3: self.vmcb.read64(save::CR3),
            cr4: self.vmcb.read64(save::CR4),
            efer: self.vmcb.read64(save::EFER) & !EFER_SVME,
            cs_long: self.vmcb.segment(save::CS).attrib & (1 << 9) != 0,
        }
    }

    /// General-purpose register `n` by encoding (RAX is mirrored in `regs`, RSP lives in
    /// the VMCB).
    fn gpr(&self, n: u8) -> u64 {
        let mut regs = self.regs;
        regs.by_encoding(n)
            .map_or_else(|| self.vmcb.read64(save::RSP), |r| *r)
    }

    /// Reads guest memory at linear address `linear` through the guest's paging (`wrap`:
    /// the address wraps at 4 GiB). Returns how many bytes were readable from the start.
    fn read_linear(&self, linear: u64, buf: &mut [u8], wrap: bool) -> usize {
        let mode = guest_walk::PagingMode {
            cr0: self.vmcb.read64(save::CR0),
            cr3: self.vmcb.read64(save::CR3),
            cr4: self.vmcb.read64(save::CR4),
            efer: self.vmcb.read64(save::EFER),
        };
        let mem = NptMem(self.vmcb.read64(ctl::N_CR3));
        let mut done = 0;
        while done < buf.len() {
            let mut at = linear.wrapping_add(done as u64);
            if wrap {
                at &= 0xffff_ffff;
            }
            let n = (4096 - (at & 0xfff) as usize).min(buf.len() - done);
            let Some(gpa) = guest_walk::translate(&mode, at, &mem) else {
                break;
            };
            if mem.read(gpa, &mut buf[done..done + n]).is_none() {
                break;
            }
            done += n;
        }
        done
    }

    /// Flushes this guest's TLB entries at the next VMRUN (all of them, or only the
    /// non-global ones), as the emulated CR write would have on hardware.
    fn flush_guest_tlb(&mut self, non_global: bool) {
        let want = match (self.flush_by_asid, non_global) {
            (false, _) => 1,
            (true, false) => 3,
            (true, true) => 7,
        };
        let cur = self.vmcb.read8(ctl::TLB_CONTROL);
        let v = if cur == 1 || want == 1 {
            1
        } else if cur == 3 || want == 3 {
            3
        } else {
            want
        };
        self.vmcb.write8(ctl::TLB_CONTROL, v);
    }

    /// Emulates the intercepted control-register write behind exit `code`: decodes the
    /// instruction at RIP, checks the value with `crcheck` and either applies it and skips
    /// the instruction or queues #GP(0). Err: the instruction could not be read or decoded.
    fn cr_write(&mut self, code: u64) -> Result<(), Exit> {
        let unhandled = Exit::Unhandled {
            code,
            qualification: self.vmcb.read64(ctl::EXITINFO1),
        };
        let gp = Event::Exception {
            vector: 13,
            error_code: Some(0),
        };
        if self.vmcb.read8(save::CPL) != 0 {
            self.inject(gp);
            return Ok(());
        }
        let st = self.cr_state();
        let cs = self.vmcb.segment(save::CS);
        let long = st.efer & (1 << 10) != 0 && st.cs_long;
        let rip = self.vmcb.read64(save::RIP);
        let mut bytes = [0u8; 15];
        let n = if long {
            self.read_linear(rip, &mut bytes, false)
        } else {
            self.read_linear(cs.base.wrapping_add(rip), &mut bytes, true)
        };
        let shape = crdecode::Code {
            long,
            big: cs.attrib & (1 << 10) != 0,
        };
        let Some((insn, len)) = crdecode::decode(&bytes[..n], shape) else {
            return Err(unhandled);
        };
        let mut next = rip.wrapping_add(len as u64);
        if !long {
            next &= 0xffff_ffff;
        }
        let width = |v: u64| if long { v } else { v & 0xffff_ffff };
        let cr = match code {
            exit::WRITE_CR3 => 3,
            exit::WRITE_CR4 => 4,
            _ => 0,
        };
        let result = match insn {
            crdecode::CrWrite::MovTo { cr: c, gpr } if c == cr => {
                let value = width(self.gpr(gpr));
                match cr {
                    0 => self.set_cr0(&st, value),
                    3 => crcheck::check_cr3(&st, value, &self.policy).map(|v| {
                        self.vmcb.write64(save::CR3, v);
                        self.flush_guest_tlb(true);
                    }),
                    _ => crcheck::check_cr4(&st, value, &self.policy).map(|()| {
                        self.vmcb.write64(save::CR4, value);
                        self.flush_guest_tlb(false);
                    }),
                }
            }
            crdecode::CrWrite::Lmsw(src) if cr == 0 => {
                let source = match src {
                    crdecode::Source::Reg(r) => self.gpr(r) as u16,
                    crdecode::Source::Mem(m) => {
                        let ea = crdecode::effective_address(&m, |r| self.gpr(r), next);
                        let seg = [save::ES, save::CS, save::SS, save::DS, save::FS, save::GS]
                            [usize::from(m.seg.min(5))];
                        let base = if long && m.seg < 4 {
                            0
                        } else {
                            self.vmcb.segment(seg).base
                        };
                        let mut w = [0u8; 2];
                        if self.read_linear(base.wrapping_add(ea), &mut w, !long) != 2 {
                            return Err(unhandled);
                        }
                        u16::from_le_bytes(w)
                    }
                };
                self.set_cr0(&st, crcheck::lmsw(st.cr0, source))
            }
            crdecode::CrWrite::Clts if cr == 0 => self.set_cr0(&st, st.cr0 & !crcheck::CR0_TS),
            // The bytes at RIP are not the instruction that exited (another vCPU changed
            // them): run it again.
            _ => return Ok(()),
        };
        match result {
            Ok(()) => {
                self.vmcb.write64(save::RIP, next);
                self.vmcb.write64(ctl::INTERRUPT_SHADOW, 0);
            }
            Err(()) => self.inject(gp),
        }
        Ok(())
    }

    /// Loads a checked CR0 value; entering or leaving paging with EFER.LME set switches
    /// EFER.LMA, as the CPU does for a MOV it executes itself.
    fn set_cr0(&mut self, st: &CrState, value: u64) -> Result<(), ()> {
        crcheck::check_cr0(st, value)?;
        let value = value | (1 << 4); // ET is hardwired to 1
        let mut efer = st.efer;
        if value & crcheck::CR0_PG == 0 {
            efer &= !crcheck::EFER_LMA;
        } else if efer & crcheck::EFER_LME != 0 {
            efer |= crcheck::EFER_LMA;
        }
        self.vmcb.write64(save::EFER, efer | EFER_SVME);
        self.vmcb.write64(save::CR0, value);
        self.flush_guest_tlb(false);
        Ok(())
    }
}

impl Vcpu for SvmVcpu {
    fn load(&mut self) {
        let pc = percpu::this();
        let a = pc.asids.lock().assign(pc.index, self.max_asid, self.asid);
        if a.flush_all {
            // A new generation: stale translations of every ASID go at the next VMRUN,
            // whichever vCPU it runs.
            pc.tlb_flush_pending.store(true, Ordering::SeqCst);
        }
        if a.changed {
            self.vmcb.write32(ctl::GUEST_ASID, a.tag.tag);
        }
        self.asid = Some(a.tag);
        self.ext.restore();
        self.held.restore(Held::Dr0To3);
        self.host_tsc_aux = crate::arch::x86::regs::rdmsr(MSR_TSC_AUX);
        self.host_debugctl = crate::arch::x86::regs::rdmsr(msr::DEBUGCTL);
        if self.host_tsc_aux != self.tsc_aux {
            // SAFETY: TSC_AUX only holds the value RDTSCP/RDPID return; the host's is put
            // back in `put` before host code that reads it (none does) runs again.
            unsafe { crate::arch::x86::regs::wrmsr(MSR_TSC_AUX, self.tsc_aux) };
        }
        self.loaded = true;
    }

    fn put(&mut self) {
        if self.loaded {
            if self.host_tsc_aux != self.tsc_aux {
                // SAFETY: restores the host's own TSC_AUX value; it affects only what
                // RDTSCP/RDPID return.
                unsafe { crate::arch::x86::regs::wrmsr(MSR_TSC_AUX, self.host_tsc_aux) };
            }
            self.ext.save();
            self.held.save(Held::Dr0To3);
            self.loaded = false;
        }
    }

    fn run(&mut self) -> Exit {
        if !self.loaded || self.waiting_for_sipi {
            return Exit::EntryFailed {
                reason: if self.loaded {
                    "vCPU waiting for SIPI was run"
                } else {
                    "vCPU run without load"
                },
                detail: 0,
            };
        }
        let pc = percpu::this();
        let host_area = pc.host_save_area.load(Ordering::Relaxed);
        loop {
            if pc.tlb_flush_pending.swap(false, Ordering::SeqCst) {
                self.vmcb.write8(ctl::TLB_CONTROL, 1);
            }
            self.vmcb.write64(save::RAX, self.regs.rax);
            xcr::enter_guest(self.xcr0);
            let swap_debugctl = !self.lbr_virt && self.debugctl != self.host_debugctl;
            if swap_debugctl {
                // SAFETY: LBR/BTF only (checked on write): BTF acts only with RFLAGS.TF,
                // which the host never sets, and the host reads no LBR; its value is
                // restored right after the exit.
                unsafe { crate::arch::x86::regs::wrmsr(msr::DEBUGCTL, self.debugctl) };
            }
            crate::arch::x86::cr4::match_guest(self.vmcb.read64(save::CR4));
            spec::before_entry();
            // SAFETY: the VMCB was fully initialised in `new` and only modified through
            // this vCPU, with a valid ASID from `load`; `host_area` is this CPU's VMSAVE
            // area; SVM is enabled on this CPU (Svm::init).
            unsafe { entry::run(&mut self.regs, self.vmcb.pa(), host_area) };
            spec::after_exit();
            if swap_debugctl {
                // SAFETY: the host's own value, read at `load`.
                unsafe { crate::arch::x86::regs::wrmsr(msr::DEBUGCTL, self.host_debugctl) };
            }
            xcr::leave_guest_sync(&mut self.xcr0);
            self.regs.rax = self.vmcb.read64(save::RAX);
            self.vmcb.write8(ctl::TLB_CONTROL, 0);
            self.requeue_interrupted_event();
            let code = self.vmcb.read64(ctl::EXITCODE);
            crate::schedule::stats::backend_exit(code);
            if code == exit::INTR {
                // The interrupt is still pending (IF = 0 since the exit): handle it now.
                irq::take_pending();
            }
            if let NmiBlocking::Iret(at) = self.nmi {
                if self.vmcb.read64(save::RIP) != at {
                    self.nmi = NmiBlocking::None;
                }
            }
            if code == exit::IRET {
                // The IRET has not run yet: it does when the guest resumes, and NMIs
                // unblock at the first exit after it. For a held NMI, the VINTR window
                // gives that exit, but only if IF is clear now: with IF set it would come
                // before the IRET, again and again.
                self.set_misc1(MISC1_IRET, false);
                self.nmi = NmiBlocking::Iret(self.vmcb.read64(save::RIP));
                self.update_vintr();
                continue;
            }
            // SVM instructions, MONITOR/MWAIT and RDTSCP are hidden from guests by CPUID:
            // executing them is an invalid opcode, as on a CPU without them.
            if code == exit::VMRUN
                || (exit::VMLOAD..=exit::SKINIT).contains(&code)
                || code == exit::INVLPGA
                || code == exit::MONITOR
                || code == exit::MWAIT
                || code == exit::RDTSCP
            {
                self.inject(Event::Exception {
                    vector: 6,
                    error_code: None,
                });
                continue;
            }
            match code {
                exit::WRITE_CR0 | exit::WRITE_CR3 | exit::WRITE_CR4 | exit::CR0_SEL_WRITE => {
                    match self.cr_write(code) {
                        Ok(()) => continue,
                        Err(exit) => return exit,
                    }
                }
                // No performance counters are offered (CPUID leaf 0xA is zero).
                exit::RDPMC => {
                    self.inject(Event::Exception {
                        vector: 13,
                        error_code: Some(0),
                    });
                    continue;
                }
                // Reflected as they came; the CPU has already updated DR6 for a #DB.
                exit::EXCP_DB | exit::EXCP_AC => {
                    if self.vmcb.read64(ctl::EVENTINJ) & EVENT_VALID == 0 {
                        let ac = code == exit::EXCP_AC;
                        self.inject(Event::Exception {
                            vector: (code - 0x40) as u8,
                            error_code: ac.then_some(self.vmcb.read64(ctl::EXITINFO1) as u32),
                        });
                    }
                    continue;
                }
                exit::EXCP_MC => {
                    log::error!(
                        "svm: machine check while a guest ran (RIP {:#x}); guest resumed",
                        self.vmcb.read64(save::RIP)
                    );
                    continue;
                }
                _ => {}
            }
            return self.decode();
        }
    }

    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn trace_state(&self) -> crate::hvm::TraceState {
        crate::hvm::TraceState {
            rip: self.vmcb.read64(save::RIP),
            injecting: match self.vmcb.read64(ctl::EVENTINJ) {
                e if e & EVENT_VALID != 0 => e,
                _ if self.virq_queued => (self.vmcb.read64(ctl::V_INTR) >> 32 & 0xff) | EVENT_VALID,
                _ => 0,
            },
            delivering: self.vmcb.read64(ctl::EXITINTINFO),
        }
    }

    fn control_state(&self) -> ControlState {
        let cs = self.vmcb.segment(save::CS);
        ControlState {
            rip: self.vmcb.read64(save::RIP),
            rsp: self.vmcb.read64(save::RSP),
            rflags: self.vmcb.read64(save::RFLAGS),
            cr0: self.vmcb.read64(save::CR0),
            cr2: self.vmcb.read64(save::CR2),
            cr3: self.vmcb.read64(save::CR3),
            cr4: self.vmcb.read64(save::CR4),
            efer: self.vmcb.read64(save::EFER) & !EFER_SVME,
            cs_selector: cs.selector,
            cpl: self.vmcb.read8(save::CPL),
        }
    }

    fn skip_instruction(&mut self) {
        let next = if self.vmcb.read64(ctl::EXITCODE) == exit::IOIO {
            self.io_next_rip
        } else {
            self.next_rip()
        };
        self.vmcb.write64(save::RIP, next);
        // Skipping an instruction ends any STI/MOV SS interrupt shadow.
        self.vmcb.write64(ctl::INTERRUPT_SHADOW, 0);
    }

    fn inject(&mut self, event: Event) {
        let v = match event {
            Event::Interrupt(vector) => {
                self.queue_virq(vector);
                return;
            }
            Event::Nmi => {
                self.nmi = NmiBlocking::Handler;
                self.set_misc1(MISC1_IRET, true);
                EVENT_NMI | EVENT_VALID
            }
            Event::Exception { vector, error_code } => {
                let mut v = u64::from(vector) | 3 << 8 | EVENT_VALID;
                // Real mode (CR0.PE clear) exceptions push no error code.
                let protected = self.vmcb.read64(save::CR0) & 1 != 0;
                if let (Some(e), true) = (error_code, protected) {
                    v |= 1 << 11 | u64::from(e) << 32;
                }
                v
            }
        };
        self.vmcb.write64(ctl::EVENTINJ, v);
    }

    fn interrupts_enabled(&self) -> bool {
        !self.virq_queued
            && self.vmcb.read64(save::RFLAGS) & (1 << 9) != 0
            && self.vmcb.read64(ctl::INTERRUPT_SHADOW) & 1 == 0
            && self.vmcb.read64(ctl::EVENTINJ) & EVENT_VALID == 0
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.irq_window = on;
        self.update_vintr();
    }

    fn nmi_allowed(&self) -> bool {
        self.nmi == NmiBlocking::None
            && self.vmcb.read64(ctl::INTERRUPT_SHADOW) & 1 == 0
            && self.vmcb.read64(ctl::EVENTINJ) & EVENT_VALID == 0
    }

    fn request_nmi_window(&mut self, on: bool) {
        // There is no NMI-window intercept: while the handler runs, the IRET intercept
        // brings the guest back; behind a shadow or another injection (or after the IRET,
        // see `run`), the VINTR window gives the next exit.
        self.nmi_window = on;
        self.update_vintr();
    }

    fn set_slice_deadline(&mut self, _tsc: Option<u64>) {}

    fn read_msr(&self, index: u32) -> Option<u64> {
        Some(match index {
            0xc000_0080 => self.vmcb.read64(save::EFER) & !EFER_SVME,
            0x277 => self.vmcb.read64(save::G_PAT),
            msr::DEBUGCTL if self.lbr_virt => self.vmcb.read64(save::DBGCTL),
            msr::DEBUGCTL => self.debugctl,
            MSR_TSC_AUX => self.tsc_aux,
            _ => return None,
        })
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<bool, ()> {
        match index {
            0xc000_0080 => {
                // Reserved bits, LME changes under paging: #GP; LMA is the CPU's, kept.
                let efer = crcheck::check_efer(&self.cr_state(), value, &self.policy)?;
                self.vmcb.write64(save::EFER, efer | EFER_SVME);
            }
            0x277 => {
                // Each PAT entry must be a valid memory type (0, 1, 4, 5, 6, 7).
                if (0..8).any(|i| matches!((value >> (i * 8)) & 0xff, 2 | 3 | 8..)) {
                    return Err(());
                }
                self.vmcb.write64(save::G_PAT, value);
            }
            msr::DEBUGCTL => {
                if !msr::debugctl_valid(value) {
                    return Err(());
                }
                self.debugctl = value;
                if self.lbr_virt {
                    self.vmcb.write64(save::DBGCTL, value);
                }
            }
            MSR_TSC_AUX => {
                if value >> 32 != 0 {
                    return Err(());
                }
                self.tsc_aux = value;
                if self.loaded {
                    // SAFETY: a 32-bit value for RDTSCP/RDPID while this vCPU is loaded;
                    // `put` restores the host's.
                    unsafe { crate::arch::x86::regs::wrmsr(MSR_TSC_AUX, value) };
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_xcr0(&mut self, value: u64) -> Result<(), ()> {
        xcr::check_guest_xcr0(value)?;
        self.xcr0 = value;
        Ok(())
    }

    fn frames(&self) -> u64 {
        1 + self.ext.frames()
    }

    fn xcr0(&self) -> u64 {
        self.xcr0
    }

    fn reset_to_sipi(&mut self, vector: u8) {
        let v = &mut self.vmcb;
        let base = u64::from(vector) << 12;
        v.set_segment(
            save::CS,
            Segment {
                selector: u16::from(vector) << 8,
                attrib: 0x09b,
                limit: 0xffff,
                base,
            },
        );
        let data = Segment {
            selector: 0,
            attrib: 0x093,
            limit: 0xffff,
            base: 0,
        };
        for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            v.set_segment(seg, data);
        }
        let table = Segment {
            selector: 0,
            attrib: 0,
            limit: 0xffff,
            base: 0,
        };
        v.set_segment(save::GDTR, table);
        v.set_segment(save::IDTR, table);
        v.set_segment(
            save::LDTR,
            Segment {
                selector: 0,
                attrib: 0x082,
                limit: 0xffff,
                base: 0,
            },
        );
        // A busy 16-bit TSS, as after INIT.
        v.set_segment(
            save::TR,
            Segment {
                selector: 0,
                attrib: 0x083,
                limit: 0xffff,
                base: 0,
            },
        );
        v.write8(save::CPL, 0);
        v.write64(save::EFER, EFER_SVME);
        v.write64(save::CR0, 0x6000_0010); // CD | NW | ET
        v.write64(save::CR2, 0);
        v.write64(save::CR3, 0);
        v.write64(save::CR4, 0);
        v.write64(save::DR7, 0x400);
        v.write64(save::DR6, 0xffff_0ff0);
        v.write64(save::RFLAGS, 0x2);
        v.write64(save::RIP, 0);
        v.write64(save::RSP, 0);
        v.write64(ctl::EVENTINJ, 0);
        v.write64(ctl::INTERRUPT_SHADOW, 0);
        let misc1 = v.read32(ctl::INTERCEPT_MISC1);
        v.write32(ctl::INTERCEPT_MISC1, misc1 & !(MISC1_VINTR | MISC1_IRET));
        self.nmi = NmiBlocking::None;
        self.irq_window = false;
        self.nmi_window = false;
        self.virq_queued = false;
        v.write64(ctl::V_INTR, V_INTR_MASKING | V_IGN_TPR);
        self.regs = GuestRegs {
            rdx: u64::from(core::arch::x86_64::__cpuid_count(1, 0).eax),
            ..GuestRegs::default()
        };
        self.debugctl = 0;
        self.vmcb.write64(save::DBGCTL, 0);
        self.xcr0 = 1;
        self.ext.reset();
        self.held = HeldRegs::default();
        if self.loaded {
            self.ext.restore();
            self.held.restore(Held::Dr0To3);
        }
        self.waiting_for_sipi = false;
    }

    fn set_start_state(&mut self, st: &StartState) -> Result<(), ()> {
        self.reset_to_sipi(0);
        let seg = |s: &crate::hvm::StartSegment| Segment {
            selector: 0,
            attrib: s.attr & 0xfff,
            limit: s.limit,
            base: s.base,
        };
        let v = &mut self.vmcb;
        v.set_segment(save::CS, seg(&st.cs));
        v.set_segment(save::DS, seg(&st.ds));
        v.set_segment(save::SS, seg(&st.ss));
        v.set_segment(save::ES, seg(&st.es));
        v.set_segment(save::TR, seg(&st.tr));
        let flat = Segment {
            selector: 0,
            attrib: 0xc93,
            limit: 0xffff_ffff,
            base: 0,
        };
        v.set_segment(save::FS, flat);
        v.set_segment(save::GS, flat);
        let empty = Segment {
            selector: 0,
            attrib: 0,
            limit: 0,
            base: 0,
        };
        v.set_segment(save::GDTR, empty);
        v.set_segment(save::IDTR, empty);
        // SVM takes the CPL from its own field (SS.DPL by definition; CS.DPL equals it).
        v.write8(save::CPL, ((st.ss.attr >> 5) & 3) as u8);
        v.write64(save::CR0, st.cr0);
        v.write64(save::CR3, st.cr3);
        v.write64(save::CR4, st.cr4);
        v.write64(save::EFER, st.efer | EFER_SVME);
        v.write64(save::RFLAGS, st.rflags);
        v.write64(save::RIP, st.rip);
        v.write64(save::RSP, st.rsp);
        self.regs = st.regs;
        Ok(())
    }

    fn flush_nested_tlb(&mut self) {
        self.vmcb.write8(ctl::TLB_CONTROL, 1);
    }

    fn exit_instruction_bytes(&self) -> Option<([u8; 15], usize)> {
        if !self.decode_assists || self.vmcb.read64(ctl::EXITCODE) != exit::NPF {
            return None;
        }
        let n = usize::from(self.vmcb.read8(ctl::INSN_LEN)).min(15);
        let mut bytes = [0u8; 15];
        for (i, b) in bytes.iter_mut().enumerate().take(n) {
            *b = self.vmcb.read8(ctl::INSN_BYTES + i);
        }
        (n > 0).then_some((bytes, n))
    }
    fn emulation_state(&self) -> EmulationState {
        let mut seg_base = [0u64; 6];
        for (base, off) in
            seg_base
                .iter_mut()
                .zip([save::ES, save::CS, save::SS, save::DS, save::FS, save::GS])
        {
            *base = self.vmcb.segment(off).base;
        }
        // VMCB attributes: the access byte in bits 0-7, then AVL, L, D/B, G.
        let cs = self.vmcb.segment(save::CS).attrib;
        EmulationState {
            seg_base,
            cs_long: cs & (1 << 9) != 0,
            cs_default_big: cs & (1 << 10) != 0,
        }
    }

    fn complete_emulation(&mut self, rip: u64, rflags: u64) {
        self.vmcb.write64(save::RIP, rip);
        self.vmcb.write64(save::RFLAGS, rflags);
        self.vmcb.write64(ctl::INTERRUPT_SHADOW, 0);
    }
}

impl Drop for SvmVcpu {
    /// Frees the VMCB (its save area goes with `ext`). Its ASID needs no flush: it is
    /// never handed out again before a new generation flushes the whole TLB.
    fn drop(&mut self) {
        crate::mm::phys::free_frames(self.vmcb.pa(), 1);
    }
}
