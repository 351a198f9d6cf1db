//! Intel VMX + EPT backend (Intel SDM Vol. 3C chapters 24-28).
//!
//! Host-testable (pure, no instructions): [`controls`] (capability MSRs, control
//! derivation), [`decode`] (exit decoding, error names, access rights, event encoding),
//! [`fields`] (VMCS encodings), [`modes`] (CR0/CR4/EFER bookkeeping). Everything else runs
//! VMX instructions and exists only in the bare-metal build.
//!
//! Exits handled inside [`Vcpu::run`](crate::hvm::Vcpu::run) and never reported: CR
//! accesses (CR0.PG / long-mode switch, CR4 with VMXE hidden, CR3/CR8 if the CPU forces
//! their exiting).
//!
//! LEAD: (1) "acknowledge interrupt on exit" is on: a host interrupt that arrives while a
//! guest runs is acknowledged by the exit and dispatched in software (`irq::dispatch`,
//! which EOIs it) before `Exit::ExternalInterrupt` is reported; an NMI exit is counted
//! and reported the same way (see `vcpu`).
//! (2) Declare this module without a cfg (`mod vmx;`) to run the host tests of the pure
//! submodules; the hardware ones are gated here.
//! (3) The backend holds these guest MSRs for `read_msr`/`write_msr`: EFER, PAT, FS/GS
//! base, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_CS/ESP/EIP, DEBUGCTL (0 only),
//! TSC_AUX, XSS. The non-VMCS ones stay loaded in the CPU while guests run (the hypervisor
//! does not use them) and are switched lazily between vCPUs.
//! (4) Guest FPU/SSE/AVX state is saved by `Vcpu::put` and restored by `Vcpu::load`
//! (`arch::x86::fpu`); XCR0 is switched around each entry (`arch::x86::xcr`).

pub mod controls;
pub mod decode;
pub mod fields;
pub mod modes;

#[cfg(target_os = "none")]
mod backend;
#[cfg(target_os = "none")]
pub(crate) mod cpu;
#[cfg(target_os = "none")]
mod cr;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod msr;
#[cfg(target_os = "none")]
mod setup;
#[cfg(target_os = "none")]
mod vcpu;
#[cfg(target_os = "none")]
mod vmcs;

#[cfg(target_os = "none")]
pub use backend::Vmx;
