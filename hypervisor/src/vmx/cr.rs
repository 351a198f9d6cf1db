//! Control-register exits the backend handles itself (SDM Vol. 3C 26.1.3, 28.1.3): CR0.PG
//! and forced-bit writes (long-mode entry/exit), CR4 writes (VMXE hidden), and CR3/CR8
//! accesses on CPUs that cannot turn their exiting off.
#![allow(unsafe_code)]

use super::controls::{entry, proc2};
use super::decode::CrAccess;
use super::fields::Field;
use super::fields::Seg;
use super::modes::EFER_LMA;

/// TR access-rights types: 16-bit busy TSS, and busy 32/64-bit TSS.
const TSS16_BUSY: u64 = 3;
const TSS_BUSY: u64 = 11;
use super::vcpu::VmxVcpu;
use super::vmcs;
use crate::hvm::{Event, Vcpu};
use crate::mm::phys::{self, DirectMap};
use pagetable::{Ept, PageTable};

const GP0: Event = Event::Exception {
    vector: 13,
    error_code: Some(0),
};
const CR0_TS: u64 = 1 << 3;

impl VmxVcpu {
    fn get_gpr(&mut self, n: u8) -> u64 {
        match self.regs.by_encoding(n) {
            Some(r) => *r,
            None => vmcs::get(Field::GUEST_RSP),
        }
    }

    fn set_gpr(&mut self, n: u8, value: u64) {
        match self.regs.by_encoding(n) {
            Some(r) => *r = value,
            None => vmcs::set(Field::GUEST_RSP, value),
        }
    }

    /// Emulates a CR access exit; on success the instruction is skipped, otherwise #GP(0)
    /// is queued.
    pub(super) fn cr_access(&mut self, access: CrAccess) {
        let result = match access {
            CrAccess::MovTo { cr: 0, gpr } => {
                let v = self.get_gpr(gpr);
                self.write_cr0(v)
            }
            CrAccess::MovTo { cr: 4, gpr } => {
                let v = self.get_gpr(gpr);
                self.write_cr4(v)
            }
            CrAccess::MovTo { cr: 3, gpr } => {
                let v = self.get_gpr(gpr);
                self.write_cr3(v)
            }
            CrAccess::MovTo { cr: 8, gpr } => {
                let v = self.get_gpr(gpr);
                if v >> 4 != 0 {
                    Err(())
                } else {
                    self.cr8 = v;
                    Ok(())
                }
            }
            CrAccess::MovFrom { cr: 3, gpr } => {
                let v = vmcs::get(Field::GUEST_CR3);
                self.set_gpr(gpr, v);
                Ok(())
            }
            CrAccess::MovFrom { cr: 8, gpr } => {
                let v = self.cr8;
                self.set_gpr(gpr, v);
                Ok(())
            }
            CrAccess::Clts => self.write_cr0(self.modes.cr0_shadow & !CR0_TS),
            CrAccess::Lmsw { source } => {
                let new = crate::hvm::crcheck::lmsw(self.modes.cr0_shadow, source);
                self.write_cr0(new)
            }
            _ => Err(()),
        };
        match result {
            Ok(()) => self.skip_instruction(),
            Err(()) => self.inject(GP0),
        }
    }

    fn write_cr0(&mut self, value: u64) -> Result<(), ()> {
        let cs_long = vmcs::get(Seg::Cs.access_rights()) & (1 << 13) != 0;
        let u = self.modes.write_cr0(value, &self.platform.fixed, cs_long)?;
        if u.load_pdptes {
            self.load_pdptes(vmcs::get(Field::GUEST_CR3))?;
        }
        vmcs::set(Field::GUEST_CR0, u.real);
        vmcs::set(Field::CR0_READ_SHADOW, u.shadow);
        vmcs::set(Field::GUEST_IA32_EFER, u.efer);
        let ctl = if u.ia32e {
            // A CPU never checks TR's type until it is used, and an AP coming from
            // INIT/SIPI (real mode, TR a 16-bit busy TSS) enters long mode before its
            // first LTR; VM entry in IA-32e mode, though, needs a busy 64-bit TSS type.
            let ar = vmcs::get(Seg::Tr.access_rights());
            if ar & 0xf == TSS16_BUSY {
                vmcs::set(Seg::Tr.access_rights(), (ar & !0xf) | TSS_BUSY);
            }
            self.controls.entry | entry::IA32E_MODE_GUEST
        } else {
            self.controls.entry & !entry::IA32E_MODE_GUEST
        };
        self.controls.entry = ctl;
        vmcs::set(Field::ENTRY_CONTROLS, ctl.into());
        self.modes.cr0_shadow = u.shadow;
        self.modes.efer = u.efer;
        Ok(())
    }

    fn write_cr4(&mut self, value: u64) -> Result<(), ()> {
        let cr3 = vmcs::get(Field::GUEST_CR3);
        let (real, shadow, pdptes) = self.modes.write_cr4(value, &self.platform.fixed, cr3)?;
        if pdptes {
            self.load_pdptes(vmcs::get(Field::GUEST_CR3))?;
        }
        vmcs::set(Field::GUEST_CR4, real);
        vmcs::set(Field::CR4_READ_SHADOW, shadow);
        self.modes.cr4_shadow = shadow;
        Ok(())
    }

    /// MOV to CR3 when the CPU forces CR3-load exiting.
    fn write_cr3(&mut self, value: u64) -> Result<(), ()> {
        let long = self.modes.efer & EFER_LMA != 0;
        let state = self.modes.state(vmcs::get(Field::GUEST_CR3), false);
        let value = crate::hvm::crcheck::check_cr3(&state, value, &self.platform.fixed.guest)?;
        let paging = self.modes.cr0_shadow & super::modes::CR0_PG != 0;
        if paging && !long && self.modes.cr4_shadow & super::modes::CR4_PAE != 0 {
            self.load_pdptes(value)?;
        }
        vmcs::set(Field::GUEST_CR3, value);
        if self.controls.proc2 & proc2::ENABLE_VPID != 0 {
            // A CR3 load flushes the guest's non-global translations.
            let _ = vmcs::invvpid(1, self.vpid);
        }
        Ok(())
    }

    /// Loads the four PAE PDPTEs at guest-physical `cr3` into the VMCS, as a MOV to CR3
    /// would (EPT is on, so VM entry takes them from the VMCS).
    pub(super) fn load_pdptes(&self, cr3: u64) -> Result<(), ()> {
        let gpa = cr3 & 0xffff_ffe0;
        let table = PageTable::<Ept>::from_root(self.p2m_root);
        let t = table.translate(&DirectMap, gpa).ok_or(())?;
        // Only write-back leaves are RAM in the direct map (device MMIO is uncacheable).
        if t.memtype != pagetable::MemType::WriteBack || t.phys + 32 > phys::mapped_limit() {
            return Err(());
        }
        let fields = [
            Field::GUEST_PDPTE0,
            Field::GUEST_PDPTE1,
            Field::GUEST_PDPTE2,
            Field::GUEST_PDPTE3,
        ];
        for (i, field) in fields.iter().enumerate() {
            // SAFETY: `t.phys` is guest RAM mapped by the p2m, inside the direct map
            // (checked), 32-byte aligned so the four entries stay in one page.
            let e = unsafe { phys::to_virt(t.phys).cast::<u64>().add(i).read_volatile() };
            // Present entries with reserved bits (2:1, 8:5, 63:52 here) fault.
            if e & 1 != 0 && e & (0x1e6 | 0xfff0_0000_0000_0000) != 0 {
                return Err(());
            }
            vmcs::set(*field, e);
        }
        Ok(())
    }
}
