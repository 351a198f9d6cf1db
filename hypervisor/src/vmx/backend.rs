//! The VMX backend object: bring-up on the boot CPU, capability report, vCPU creation.
#![allow(unsafe_code)]

use super::controls::{ept_cap, proc2, Controls, VmxCaps};
use super::cpu::{self, cpuid};
use super::modes::{Fixed, Modes};
use super::msr::GuestMsrs;
use super::setup::{self, PAT_RESET};
use super::vcpu::{Platform, VmxVcpu, FRAMES};
use super::vmcs;
use crate::arch::x86::fpu::ExtState;
use crate::arch::x86::percpu;
use crate::hvm::{Backend, BackendError, Caps, GuestRegs, PvhEntry, VcpuStart};
use crate::mm::phys;
use core::fmt;
use pagetable::Ept;

/// VMX on the boot CPU, ready to create vCPUs.
pub struct Vmx {
    caps: VmxCaps,
    controls: Controls,
    platform: Platform,
    hvm_caps: Caps,
    /// This CPU's VMXON region: owned for as long as VMX is on, never read back.
    #[allow(dead_code)]
    vmxon_region: u64,
}

impl Vmx {
    /// Detects VMX, checks IA32_FEATURE_CONTROL, derives the controls and enters VMX root
    /// operation on the calling (boot) CPU. Print the result with `Display`.
    pub fn init() -> Result<Vmx, BackendError> {
        let caps = cpu::detect()?;
        // VPIDs are recycled by generation, which needs INVVPID (all- or single-context).
        let use_vpid = caps.vpid()
            && caps.has_ept(ept_cap::INVVPID)
            && caps.has_ept(ept_cap::INVVPID_ALL | ept_cap::INVVPID_SINGLE);
        let use_timer = caps.preemption_timer();
        let controls = Controls::derive(&caps, use_vpid, use_timer)?;
        let vmxon_region = cpu::enable(&caps)?;
        let platform = platform(&caps, &controls);
        let hvm_caps = Caps {
            p2m_2m: caps.has_ept(ept_cap::PAGE_2M),
            p2m_1g: caps.has_ept(ept_cap::PAGE_1G),
            tagged_tlb: controls.proc2 & proc2::ENABLE_VPID != 0,
            slice_timer: platform.timer_rate.is_some(),
        };
        Ok(Vmx {
            caps,
            controls,
            platform,
            hvm_caps,
            vmxon_region,
        })
    }
}

fn platform(caps: &VmxCaps, controls: &Controls) -> Platform {
    let xsave = cpuid(1, 0).2 & (1 << 26) != 0;
    let xsaves =
        controls.proc2 & proc2::ENABLE_XSAVES != 0 && xsave && cpuid(0xd, 1).0 & (1 << 3) != 0;
    let xss_supported = if xsaves {
        let (_, _, c, d) = cpuid(0xd, 1);
        u64::from(d) << 32 | u64::from(c)
    } else {
        0
    };
    let invept = if caps.has_ept(ept_cap::INVEPT | ept_cap::INVEPT_SINGLE) {
        Some(1)
    } else if caps.has_ept(ept_cap::INVEPT_ALL) {
        Some(2)
    } else {
        None
    };
    let vpid_on = controls.proc2 & proc2::ENABLE_VPID != 0;
    Platform {
        vpid_limit: if vpid_on { 1 << 16 } else { 0 },
        invvpid: if caps.has_ept(ept_cap::INVVPID_ALL) {
            2
        } else {
            1
        },
        fixed: Fixed {
            cr0_fixed0: caps.cr0_fixed0,
            cr0_fixed1: caps.cr0_fixed1,
            cr4_fixed0: caps.cr4_fixed0,
            cr4_fixed1: caps.cr4_fixed1,
            guest: crate::hvm::crcheck::CrPolicy::for_guests(),
        },
        timer_rate: caps
            .preemption_timer()
            .then(|| caps.preemption_timer_rate()),
        invept,
        xss_supported,
    }
}

impl Backend for Vmx {
    type Vcpu = VmxVcpu;
    type P2m = Ept;
    const NAME: &'static str = "VMX";

    fn caps(&self) -> Caps {
        self.hvm_caps
    }

    fn create_vcpu(
        &self,
        p2m_root: u64,
        start: VcpuStart,
        privilege: crate::hvm::Privilege,
    ) -> Result<VmxVcpu, BackendError> {
        let ext = ExtState::new().ok_or(BackendError::OutOfMemory)?;
        let region = phys::alloc_zeroed(FRAMES, 1).ok_or(BackendError::OutOfMemory)?;
        // SAFETY: the frames were just allocated (exclusively ours) and are in the direct
        // map: stamp the VMCS revision id and set every I/O and MSR bitmap bit (all exit).
        unsafe {
            phys::to_virt(region)
                .cast::<u32>()
                .write_volatile(self.caps.revision_id());
            core::ptr::write_bytes(phys::to_virt(region + 4096), 0xff, 3 * 4096);
        }
        // SAFETY: the two I/O bitmap frames (A, B) follow the VMCS in the region just
        // allocated; no one else refers to them yet.
        let io = unsafe {
            core::slice::from_raw_parts_mut(phys::to_virt(region + 4096).cast::<u8>(), 2 * 4096)
        };
        crate::hvm::ioperm::fill(io, privilege);
        let (entry, rbx) = match start {
            VcpuStart::Pvh(e) => (e, e.rbx),
            VcpuStart::WaitForSipi => (PvhEntry { rip: 0, rbx: 0 }, 0),
        };
        let mut vcpu = VmxVcpu {
            regs: GuestRegs {
                rbx: rbx.into(),
                ..GuestRegs::default()
            },
            vmcs: region,
            // Assigned by `load` (VPID 0 with VPIDs enabled would fail VM entry).
            vpid: 0,
            eptp: Ept::eptp(p2m_root, false),
            p2m_root,
            launched: false,
            controls: self.controls,
            modes: Modes {
                cr0_shadow: 0x11,
                cr4_shadow: 0,
                efer: 0,
            },
            platform: self.platform,
            deadline: None,
            xcr0: 1,
            msrs: GuestMsrs::default(),
            cr8: 0,
            external_vector: None,
            tag: None,
            ext,
            held: crate::arch::x86::held::HeldRegs::default(),
            cpu: percpu::this().index,
            loaded: false,
            ran_on: 0,
            waiting_for_sipi: false,
        };
        // SAFETY: the region is this vCPU's own stamped VMCS; VMCLEAR initialises its launch
        // state before the first VMPTRLD. On error, dropping `vcpu` clears and frees it.
        unsafe { vmcs::vmclear(region) }?;
        vcpu.make_current();
        let pages = VmxVcpu::pages(region);
        setup::controls(&vcpu.controls, &pages, vcpu.eptp, 0)?;
        setup::host_state()?;
        setup::guest_state(entry, &self.platform.fixed)?;
        debug_assert_eq!(vmcs::get(super::fields::Field::GUEST_IA32_PAT), PAT_RESET);
        if matches!(start, VcpuStart::WaitForSipi) {
            crate::hvm::Vcpu::reset_to_sipi(&mut vcpu, 0);
            vcpu.waiting_for_sipi = true;
        }
        // Inactive until a CPU runs it: then any CPU may load it (or set its state)
        // without a cross-CPU VMCLEAR.
        vcpu.vmclear();
        Ok(vcpu)
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Vmx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.caps;
        write!(
            f,
            "VMCS rev {:#x}{}, EPT 2M={} 1G={} A/D={}, VPID={}, unrestricted guest, ",
            c.revision_id(),
            if c.true_controls() {
                " (TRUE controls)"
            } else {
                ""
            },
            yes(self.hvm_caps.p2m_2m),
            yes(self.hvm_caps.p2m_1g),
            yes(c.has_ept(ept_cap::ACCESSED_DIRTY)),
            yes(self.hvm_caps.tagged_tlb),
        )?;
        match self.platform.timer_rate {
            Some(r) => write!(f, "preemption timer (TSC/2^{r}), ")?,
            None => f.write_str("no preemption timer, ")?,
        }
        write!(
            f,
            "INVEPT single={} all={}, INVVPID single={} all={}; controls pin={:#x} proc={:#x} proc2={:#x} exit={:#x} entry={:#x}",
            yes(c.has_ept(ept_cap::INVEPT_SINGLE)),
            yes(c.has_ept(ept_cap::INVEPT_ALL)),
            yes(c.has_ept(ept_cap::INVVPID_SINGLE)),
            yes(c.has_ept(ept_cap::INVVPID_ALL)),
            self.controls.pin,
            self.controls.proc,
            self.controls.proc2,
            self.controls.exit,
            self.controls.entry,
        )
    }
}
