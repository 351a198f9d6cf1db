//! Guest CR0/CR4/EFER bookkeeping under unrestricted guest (Intel SDM Vol. 3C 25.6.6, 26.3.1,
//! Vol. 3A 2.5, 9.8.5). Pure, host-tested.
//!
//! The guest sees the CR0/CR4 it wrote (read shadows). The real values add the bits VMX
//! forces (CR0.NE, CR4.VMXE; CR0.PE/PG are exempt under unrestricted guest). CR0.PG is always
//! intercepted so that the backend can switch EFER.LMA and the "IA-32e mode guest" entry
//! control, which the hardware does not do by itself on VM entry.
#![allow(dead_code)] // complete SDM tables: not every entry is used yet

use crate::hvm::crcheck::{self, CrPolicy, CrState};

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// The CR0/CR4 fixed-bit MSRs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fixed {
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// What the guest's CPUID offers (CR4 and EFER bits, MAXPHYADDR).
    pub guest: CrPolicy,
}

/// Guest mode state the backend keeps in sync with the VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    /// CR0 as the guest sees it (refreshed from the VMCS at each CR exit).
    pub cr0_shadow: u64,
    /// CR4 as the guest sees it.
    pub cr4_shadow: u64,
    /// Guest EFER (LMA included).
    pub efer: u64,
}

/// What a successful CR0 write changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr0Update {
    pub real: u64,
    pub shadow: u64,
    pub efer: u64,
    /// The "IA-32e mode guest" entry control.
    pub ia32e: bool,
    /// PAE paging without long mode was entered: the PDPTEs must be loaded into the VMCS.
    pub load_pdptes: bool,
}

impl Fixed {
    /// CR0 bits whose guest writes must exit: PG always, CD and NW (the guest's cache
    /// disabling is recorded but not applied: guest memory is write-back in the EPT, and
    /// a guest must not be able to slow the host's caches down), plus every bit VMX forces
    /// either way (except PE, which unrestricted guest lets the guest own).
    pub const fn cr0_mask(&self) -> u64 {
        ((self.cr0_fixed0 & !CR0_PE) | (!self.cr0_fixed1 & 0xffff_ffff)) | CR0_PG | CR0_CD | CR0_NW
    }

    /// CR4 bits whose guest writes must exit: VMXE, every other forced or unsupported bit,
    /// and every bit the guest's CPUID does not offer (the CPU would let the guest set it).
    pub const fn cr4_mask(&self) -> u64 {
        self.cr4_fixed0
            | (!self.cr4_fixed1 & 0xffff_ffff)
            | CR4_VMXE
            | (!self.guest.cr4_valid & 0xffff_ffff)
    }

    /// The CR0 the guest sees: guest-owned bits from the real register, masked ones from
    /// the read shadow (the guest changes unmasked bits such as TS or PE without an exit).
    pub const fn cr0_visible(&self, real: u64, shadow: u64) -> u64 {
        let mask = self.cr0_mask();
        (real & !mask) | (shadow & mask)
    }

    /// The CR4 the guest sees (as for [`Fixed::cr0_visible`]).
    pub const fn cr4_visible(&self, real: u64, shadow: u64) -> u64 {
        let mask = self.cr4_mask();
        (real & !mask) | (shadow & mask)
    }

    /// The real CR0 for a guest-visible value.
    pub const fn cr0_real(&self, guest: u64) -> u64 {
        (((guest & !(CR0_CD | CR0_NW)) | CR0_ET | (self.cr0_fixed0 & !(CR0_PE | CR0_PG)))
            & self.cr0_fixed1)
            | (guest & (CR0_PE | CR0_PG))
    }

    /// The real CR4 for a guest-visible value.
    pub const fn cr4_real(&self, guest: u64) -> u64 {
        (guest | self.cr4_fixed0 | CR4_VMXE) & self.cr4_fixed1
    }
}

impl Modes {
    /// The state the shared checks look at; `cs_long` is CS.L, `cr3` the guest's CR3.
    pub fn state(&self, cr3: u64, cs_long: bool) -> CrState {
        CrState {
            cr0: self.cr0_shadow,
            cr3,
            cr4: self.cr4_shadow,
            efer: self.efer,
            cs_long,
        }
    }

    /// A guest MOV to CR0 (or LMSW/CLTS turned into one), with CS.L = `cs_long`. Err: the
    /// write faults (#GP), by the rules of [`crcheck::check_cr0`].
    pub fn write_cr0(&self, value: u64, f: &Fixed, cs_long: bool) -> Result<Cr0Update, ()> {
        crcheck::check_cr0(&self.state(0, cs_long), value)?;
        let paging = value & CR0_PG != 0;
        let was_paging = self.cr0_shadow & CR0_PG != 0;
        let pae = self.cr4_shadow & CR4_PAE != 0;
        let lme = self.efer & EFER_LME != 0;
        let mut efer = self.efer & !EFER_LMA;
        if paging && lme {
            efer |= EFER_LMA;
        }
        Ok(Cr0Update {
            real: f.cr0_real(value),
            shadow: value,
            efer,
            ia32e: efer & EFER_LMA != 0,
            load_pdptes: paging && !was_paging && pae && !lme,
        })
    }

    /// A guest MOV to CR4 (`cr3` the guest's CR3). Ok((real, shadow, load_pdptes)); Err:
    /// #GP, by the rules of [`crcheck::check_cr4`] for the bits both the CPU and the
    /// guest's CPUID offer.
    pub fn write_cr4(&self, value: u64, f: &Fixed, cr3: u64) -> Result<(u64, u64, bool), ()> {
        let policy = CrPolicy {
            cr4_valid: f.guest.cr4_valid & f.cr4_fixed1 & !CR4_VMXE,
            ..f.guest
        };
        crcheck::check_cr4(&self.state(cr3, false), value, &policy)?;
        let long = self.efer & EFER_LMA != 0;
        let paging = self.cr0_shadow & CR0_PG != 0;
        let pae_changed = (value ^ self.cr4_shadow) & CR4_PAE != 0;
        Ok((
            f.cr4_real(value),
            value,
            paging && !long && value & CR4_PAE != 0 && pae_changed,
        ))
    }

    /// A guest WRMSR to EFER. LMA is read-only (kept as is); LME cannot change while paging
    /// is on; only bits the guest's CPUID offers ([`crcheck::check_efer`]). Err: #GP.
    pub fn write_efer(&self, value: u64, f: &Fixed) -> Result<u64, ()> {
        crcheck::check_efer(&self.state(0, false), value, &f.guest)
    }
}

/// True if `v` is a canonical 48-bit virtual address.
pub const fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// True if every byte of a PAT value is a valid memory type (0, 1, 4, 5, 6, 7).
pub fn valid_pat(v: u64) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Fixed = Fixed {
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x3727ff,
        guest: CrPolicy {
            // What Bochs's Skylake offers a guest (no VMXE, SMXE or LA57).
            cr4_valid: 0x3727ff & !(CR4_VMXE | 1 << 14 | 1 << 12),
            efer_valid: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE,
            phys_bits: 39,
        },
    };

    #[test]
    fn pvh_entry_values() {
        assert_eq!(F.cr0_real(0x11), 0x31);
        assert_eq!(F.cr4_real(0), CR4_VMXE);
        assert_eq!(F.cr0_mask(), CR0_PG | CR0_NE | CR0_CD | CR0_NW);
        assert_eq!(
            F.cr0_real(0x11 | CR0_CD | CR0_NW),
            0x31,
            "guest cache-disable is not applied"
        );
        assert_eq!(F.cr4_mask() >> 32, 0);
        assert_ne!(F.cr4_mask() & CR4_VMXE, 0);
        assert_ne!(
            F.cr4_mask() & (1 << 12),
            0,
            "LA57 unsupported by this CPU: intercepted"
        );
    }

    #[test]
    fn guest_owned_bits_come_from_the_real_register() {
        // The guest set CR4.PAE and CR0.TS without exits.
        assert_eq!(F.cr4_visible(CR4_VMXE | CR4_PAE, 0), CR4_PAE);
        assert_eq!(F.cr0_visible(0x31 | 8, 0x11), 0x19);
    }

    #[test]
    fn linux_pvh_long_mode_switch() {
        let mut m = Modes {
            cr0_shadow: 0x11,
            cr4_shadow: 0,
            efer: 0,
        };
        let (real4, shadow4, pdpte) = m.write_cr4(CR4_PAE, &F, 0).unwrap();
        assert_eq!(
            (real4, shadow4, pdpte),
            (CR4_PAE | CR4_VMXE, CR4_PAE, false)
        );
        m.cr4_shadow = shadow4;
        m.efer = m.write_efer(EFER_LME, &F).unwrap();
        let u = m.write_cr0(CR0_PG | CR0_PE | CR0_ET, &F, false).unwrap();
        assert_eq!(u.real, CR0_PG | CR0_PE | CR0_ET | CR0_NE);
        assert_eq!(u.efer, EFER_LME | EFER_LMA);
        assert!(u.ia32e && !u.load_pdptes);
        m.cr0_shadow = u.shadow;
        m.efer = u.efer;
        // EFER writes keep LMA; LME cannot be cleared with paging on.
        assert_eq!(
            m.write_efer(EFER_LME | EFER_SCE | EFER_NXE, &F),
            Ok(EFER_LME | EFER_LMA | EFER_SCE | EFER_NXE)
        );
        assert_eq!(m.write_efer(0, &F), Err(()));
        // CR4.PAE cannot be cleared in long mode; CR4.VMXE is refused.
        assert_eq!(m.write_cr4(0, &F, 0), Err(()));
        assert_eq!(m.write_cr4(CR4_PAE | CR4_VMXE, &F, 0), Err(()));
        // Leaving paging leaves long mode.
        let u = m.write_cr0(CR0_PE | CR0_ET, &F, false).unwrap();
        assert!(!u.ia32e && u.efer == EFER_LME);
    }

    #[test]
    fn invalid_cr0_writes() {
        let m = Modes {
            cr0_shadow: 0x11,
            cr4_shadow: 0,
            efer: EFER_LME,
        };
        assert_eq!(m.write_cr0(CR0_PG, &F, false), Err(()), "PG without PE");
        assert_eq!(
            m.write_cr0(CR0_PG | CR0_PE, &F, false),
            Err(()),
            "long mode without PAE"
        );
        assert_eq!(
            m.write_cr0(CR0_NW | CR0_PE, &F, false),
            Err(()),
            "NW without CD"
        );
        assert_eq!(m.write_efer(1 << 1, &F), Err(()), "reserved EFER bit");
    }

    #[test]
    fn pae_legacy_paging_needs_pdptes() {
        let m = Modes {
            cr0_shadow: 0x11,
            cr4_shadow: CR4_PAE,
            efer: 0,
        };
        let u = m.write_cr0(CR0_PG | CR0_PE, &F, false).unwrap();
        assert!(u.load_pdptes && !u.ia32e);
    }

    #[test]
    fn pat_and_canonical_checks() {
        assert!(valid_pat(0x0007_0406_0007_0406));
        assert!(!valid_pat(0x0007_0406_0007_0402));
        assert!(canonical(0xffff_8000_0000_0000) && !canonical(0x0000_8000_0000_0000));
    }
}
