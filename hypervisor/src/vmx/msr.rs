//! Guest MSRs the VMX backend holds: the ones in the VMCS guest area (EFER, PAT, FS/GS base,
//! SYSENTER_*, DEBUGCTL) and the ones the VMCS does not switch but the hypervisor never uses
//! itself (STAR/LSTAR/CSTAR/SFMASK, KERNEL_GS_BASE, TSC_AUX, XSS). The latter stay loaded in
//! the CPU while the guest runs and are rewritten only when another vCPU ran in between
//! or the guest changed them.
#![allow(unsafe_code)]

use super::cpu::wrmsr;
use super::fields::{Field, Seg};
use super::modes::{canonical, valid_pat};
use super::vcpu::VmxVcpu;
use super::vmcs;
use crate::arch::x86::percpu;
use core::sync::atomic::Ordering;

pub const EFER: u32 = 0xc000_0080;
pub const STAR: u32 = 0xc000_0081;
pub const LSTAR: u32 = 0xc000_0082;
pub const CSTAR: u32 = 0xc000_0083;
pub const SFMASK: u32 = 0xc000_0084;
pub const FS_BASE: u32 = 0xc000_0100;
pub const GS_BASE: u32 = 0xc000_0101;
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const TSC_AUX: u32 = 0xc000_0103;
pub const SYSENTER_CS: u32 = 0x174;
pub const SYSENTER_ESP: u32 = 0x175;
pub const SYSENTER_EIP: u32 = 0x176;
pub const DEBUGCTL: u32 = 0x1d9;
pub const PAT: u32 = 0x277;
pub const XSS: u32 = 0xda0;

/// The lazily switched MSRs, in [`LAZY`] order.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestMsrs {
    values: [u64; 7],
    dirty: bool,
}

const LAZY: [u32; 7] = [STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX, XSS];

impl GuestMsrs {
    /// Loads the values into the CPU unless they are there already. `xss` says whether
    /// IA32_XSS exists.
    pub fn load_if_needed(&mut self, owner: u64, xss: bool) {
        let loaded_for = &percpu::this().lazy_msr_owner;
        if !self.dirty && loaded_for.load(Ordering::Relaxed) == owner {
            return;
        }
        for (i, index) in LAZY.iter().enumerate() {
            if *index == XSS && !xss {
                continue;
            }
            // SAFETY: these MSRs exist on every x86_64 CPU with VMX (XSS only when XSAVES is
            // available, checked above); the hypervisor itself uses none of them (no
            // SYSCALL, SWAPGS, RDTSCP or XSAVES), and the values were validated on write.
            unsafe { wrmsr(*index, self.values[i]) };
        }
        self.dirty = false;
        loaded_for.store(owner, Ordering::Relaxed);
    }

    /// Reads the values back from the CPU if `owner`'s are the ones loaded: the guest
    /// changes some without an exit (SWAPGS exchanges KERNEL_GS_BASE with GS base), so
    /// what was written at load time is stale by the time another vCPU takes the CPU.
    pub fn save_if_loaded(&mut self, owner: u64, xss: bool) {
        if percpu::this().lazy_msr_owner.load(Ordering::Relaxed) != owner || self.dirty {
            return;
        }
        for (i, index) in LAZY.iter().enumerate() {
            if *index == XSS && !xss {
                continue;
            }
            self.values[i] = crate::arch::x86::regs::rdmsr(*index);
        }
    }

    /// The guest's value of lazy MSR `i`: the CPU's when `owner`'s are loaded there.
    fn current(&self, owner: u64, i: usize) -> u64 {
        if !self.dirty && percpu::this().lazy_msr_owner.load(Ordering::Relaxed) == owner {
            crate::arch::x86::regs::rdmsr(LAZY[i])
        } else {
            self.values[i]
        }
    }

    /// Forgets that `owner`'s values are loaded on this CPU (the vCPU is gone).
    pub fn forget(&self, owner: u64) {
        let _ = percpu::this().lazy_msr_owner.compare_exchange(
            owner,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Forces a reload at the next entry (the vCPU moved here from another CPU, whose
    /// record of what it holds says nothing about this one).
    pub fn invalidate(&mut self) {
        self.dirty = true;
    }

    fn slot(index: u32) -> Option<usize> {
        LAZY.iter().position(|&i| i == index)
    }
}

/// The VMCS field holding a guest MSR, if it lives there.
fn vmcs_field(index: u32) -> Option<Field> {
    Some(match index {
        PAT => Field::GUEST_IA32_PAT,
        FS_BASE => Seg::Fs.base(),
        GS_BASE => Seg::Gs.base(),
        SYSENTER_CS => Field::GUEST_SYSENTER_CS,
        SYSENTER_ESP => Field::GUEST_SYSENTER_ESP,
        SYSENTER_EIP => Field::GUEST_SYSENTER_EIP,
        DEBUGCTL => Field::GUEST_IA32_DEBUGCTL,
        _ => return None,
    })
}

impl VmxVcpu {
    /// RDMSR of an MSR this backend holds (the VMCS must be current).
    pub(super) fn read_held_msr(&self, index: u32) -> Option<u64> {
        if index == EFER {
            return Some(self.modes.efer);
        }
        if index == XSS && self.platform.xss_supported == 0 {
            return None;
        }
        if let Some(field) = vmcs_field(index) {
            return Some(vmcs::get(field));
        }
        GuestMsrs::slot(index).map(|i| self.msrs.current(self.vmcs, i))
    }

    /// WRMSR of an MSR this backend holds: Ok(true) done, Ok(false) not ours, Err #GP.
    pub(super) fn write_held_msr(&mut self, index: u32, value: u64) -> Result<bool, ()> {
        let valid = match index {
            EFER => {
                let efer = self.modes.write_efer(value, &self.platform.fixed)?;
                self.modes.efer = efer;
                vmcs::set(Field::GUEST_IA32_EFER, efer);
                return Ok(true);
            }
            PAT => valid_pat(value),
            FS_BASE | GS_BASE | KERNEL_GS_BASE | LSTAR | CSTAR | SYSENTER_ESP | SYSENTER_EIP => {
                canonical(value)
            }
            SYSENTER_CS | SFMASK | TSC_AUX => value >> 32 == 0,
            // LBR and BTF, in the guest's own VMCS field (loaded at entry, saved at exit;
            // every VM exit clears the CPU's). Only 0 if the CPU cannot switch it.
            DEBUGCTL => {
                crate::hvm::msr::debugctl_valid(value)
                    && (value == 0
                        || (self.controls.entry & super::controls::entry::LOAD_DEBUG_CONTROLS != 0
                            && self.controls.exit & super::controls::exit::SAVE_DEBUG_CONTROLS
                                != 0))
            }
            XSS if self.platform.xss_supported == 0 => return Ok(false),
            XSS => value & !self.platform.xss_supported == 0,
            STAR => true,
            _ => return Ok(false),
        };
        if !valid {
            return Err(());
        }
        if let Some(field) = vmcs_field(index) {
            vmcs::set(field, value);
        } else if let Some(i) = GuestMsrs::slot(index) {
            // Keep what the guest changed without exits (SWAPGS) before the reload.
            self.msrs
                .save_if_loaded(self.vmcs, self.platform.xss_supported != 0);
            self.msrs.values[i] = value;
            self.msrs.dirty = true;
        }
        Ok(true)
    }
}
