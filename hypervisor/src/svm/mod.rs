//! AMD SVM + NPT backend.
//!
//! Bring-up per CPU (EFER.SVME, the host save area), the permission maps shared by all
//! vCPUs, and vCPU creation. The vCPU itself (VMCB set-up, VMRUN, exit decoding) is in
//! [`vcpu`]. Only this module and `vmx` know the hardware interface; the rest of the
//! hypervisor sees [`crate::hvm`].
#![allow(unsafe_code)]

mod entry;
mod vcpu;
pub mod vmcb;

use crate::arch::x86::fpu::ExtState;
use crate::arch::x86::percpu;
use crate::arch::x86::regs::{rdmsr, wrmsr};
use crate::hvm::{Backend, BackendError, Caps, VcpuStart};
use crate::mm::phys;
use core::fmt;
use core::sync::atomic::Ordering;
use raw_cpuid::CpuId;
pub use vcpu::SvmVcpu;

const MSR_EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;
const MSR_VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// The SVM backend: what all CPUs and vCPUs share. Per CPU, [`enable_cpu`] turns SVM on
/// and sets up the host save areas (the VMSAVE area lives in the per-CPU data).
pub struct Svm {
    caps: Caps,
    /// I/O permission map (12 KiB, all set: every port exits).
    iopm: u64,
    /// The control domain's I/O permission map (`hvm::ioperm`, `Privilege::Control`).
    iopm_control: u64,
    /// MSR permission map (8 KiB).
    msrpm: u64,
    /// ASIDs the CPU offers; ASID 0 is the host's. Handed out per CPU by generation
    /// (`hvm::asid`) when vCPUs are loaded.
    max_asid: u32,
    nrips: bool,
    decode_assists: bool,
}

impl fmt::Display for Svm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SVM with NPT, {} ASIDs, 2M pages {}, 1G pages {}, next-RIP save {}, decode assists {}",
            self.max_asid,
            if self.caps.p2m_2m { "yes" } else { "no" },
            if self.caps.p2m_1g { "yes" } else { "no" },
            if self.nrips {
                "yes"
            } else {
                "no (instruction lengths decoded)"
            },
            if self.decode_assists {
                "yes"
            } else {
                "no (instruction bytes read from guest memory)"
            },
        )
    }
}

/// MSRs a guest may access directly: their state is swapped by VMLOAD/VMSAVE or VMRUN,
/// so the guest cannot reach host state through them.
const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

impl Svm {
    /// Enables SVM on this CPU, or says why it cannot.
    pub fn init() -> Result<Svm, BackendError> {
        let cpuid = CpuId::new();
        let has_svm = cpuid
            .get_extended_processor_and_feature_identifiers()
            .is_some_and(|e| e.has_svm());
        if !has_svm {
            return Err(BackendError::Unsupported("SVM"));
        }
        let info = cpuid
            .get_svm_info()
            .ok_or(BackendError::Unsupported("SVM feature leaf"))?;
        if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
            return Err(BackendError::LockedByFirmware("SVM (VM_CR.SVMDIS)"));
        }
        if !info.has_nested_paging() {
            return Err(BackendError::Unsupported("nested paging (NPT)"));
        }
        let page_1g = cpuid
            .get_extended_processor_and_feature_identifiers()
            .is_some_and(|e| e.has_1gib_pages());
        if info.supported_asids() < 2 {
            return Err(BackendError::Unsupported("a guest ASID"));
        }
        let alloc = |pages| phys::alloc_zeroed(pages, 1).ok_or(BackendError::OutOfMemory);
        let (iopm, iopm_control, msrpm) = (alloc(3)?, alloc(3)?, alloc(2)?);
        fill(iopm, 3 * 4096, 0xff);
        // SAFETY: `iopm_control` is three zeroed frames just allocated (ours alone) in the
        // direct map; the slice is dropped before the frames are handed to any vCPU.
        let control = unsafe {
            core::slice::from_raw_parts_mut(phys::to_virt(iopm_control).cast::<u8>(), 3 * 4096)
        };
        crate::hvm::ioperm::fill(control, crate::hvm::Privilege::Control);
        fill(msrpm, 2 * 4096, 0xff);
        for msr in PASSTHROUGH_MSRS {
            allow_msr(msrpm, msr);
        }
        enable_cpu()?;
        Ok(Svm {
            caps: Caps {
                p2m_2m: true,
                p2m_1g: page_1g,
                tagged_tlb: true,
                slice_timer: false,
            },
            iopm,
            iopm_control,
            msrpm,
            max_asid: info.supported_asids(),
            nrips: info.has_nrip(),
            decode_assists: info.has_decode_assists(),
        })
    }
}

impl Backend for Svm {
    type Vcpu = SvmVcpu;
    type P2m = pagetable::Npt;
    const NAME: &'static str = "SVM";

    fn caps(&self) -> Caps {
        self.caps
    }

    fn create_vcpu(
        &self,
        p2m_root: u64,
        start: VcpuStart,
        privilege: crate::hvm::Privilege,
    ) -> Result<SvmVcpu, BackendError> {
        let ext = ExtState::new().ok_or(BackendError::OutOfMemory)?;
        let vmcb = phys::alloc_zeroed(1, 1).ok_or(BackendError::OutOfMemory)?;
        Ok(SvmVcpu::new(
            vmcb,
            ext,
            match privilege {
                crate::hvm::Privilege::Unprivileged => self.iopm,
                crate::hvm::Privilege::Control => self.iopm_control,
            },
            self.msrpm,
            self.max_asid,
            p2m_root,
            self.nrips,
            self.decode_assists,
            privilege,
            start,
        ))
    }
}

/// Turns SVM on for the calling CPU: EFER.SVME, the host save area (VM_HSAVE_PA) and the
/// host's VMSAVE area (kept in the per-CPU data). Once per CPU, after its per-CPU data;
/// the frames stay owned for as long as SVM is on.
pub fn enable_cpu() -> Result<(), BackendError> {
    let pc = percpu::this();
    if pc.host_save_area.load(Ordering::SeqCst) != 0 {
        return Ok(());
    }
    let hsave = phys::alloc_zeroed(1, 1).ok_or(BackendError::OutOfMemory)?;
    let Some(host_vmcb) = phys::alloc_zeroed(1, 1) else {
        phys::free_frames(hsave, 1);
        return Err(BackendError::OutOfMemory);
    };
    // SAFETY: the SVM backend is chosen only when CPUID reports SVM, so EFER.SVME and
    // VM_HSAVE_PA exist; the other EFER bits are kept, and `hsave` is a zeroed frame this
    // CPU owns from now on (the processor's host-save area).
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, hsave);
    }
    pc.host_save_area.store(host_vmcb, Ordering::SeqCst);
    Ok(())
}

/// Enables SVM on an AP after the checks the boot CPU passed in [`Svm::init`] (SVM and
/// NPT offered, not disabled by firmware); the caller has already checked that the AP's
/// CPUID (SVM feature leaf included) matches the boot CPU's.
pub fn enable_ap() -> Result<(), BackendError> {
    let cpuid = CpuId::new();
    if !cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|e| e.has_svm())
    {
        return Err(BackendError::Unsupported("SVM"));
    }
    if !cpuid.get_svm_info().is_some_and(|i| i.has_nested_paging()) {
        return Err(BackendError::Unsupported("nested paging (NPT)"));
    }
    if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
        return Err(BackendError::LockedByFirmware("SVM (VM_CR.SVMDIS)"));
    }
    enable_cpu()
}

/// Whether SVM is on for this CPU: EFER.SVME set and the host save area given to the
/// processor is this CPU's (for the boot-time check of every CPU).
pub fn enabled_here() -> bool {
    rdmsr(MSR_EFER) & EFER_SVME != 0
        && rdmsr(MSR_VM_HSAVE_PA) != 0
        && percpu::this().host_save_area.load(Ordering::SeqCst) != 0
}

fn fill(pa: u64, len: usize, byte: u8) {
    // SAFETY: `pa` is a run of `len` bytes of frames just allocated for this map and
    // reached through the direct map; nothing else references them yet.
    unsafe { core::ptr::write_bytes(phys::to_virt(pa), byte, len) };
}

/// Clears the read and write intercept bits of `msr` in the MSR permission map
/// (APM Vol. 2 §15.11: two bits per MSR, three 2 KiB ranges).
fn allow_msr(msrpm: u64, msr: u32) {
    let (base, index) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return,
    };
    let bit = index as usize * 2;
    let byte = base + bit / 8;
    let ptr = phys::to_virt(msrpm + byte as u64);
    // SAFETY: `byte` < 0x1800, inside the 8 KiB map this backend owns.
    unsafe { ptr.write_volatile(ptr.read_volatile() & !(0b11 << (bit % 8))) };
}
