//! Architectural checks on a guest's writes to CR0, CR3, CR4 and EFER: which values make
//! MOV to CR0/CR3/CR4, LMSW, CLTS or WRMSR EFER raise #GP(0) on hardware (Intel SDM Vol. 2B
//! "MOV—Move to/from Control Registers", Vol. 3A 2.5, 4.1.1; AMD APM Vol. 2 3.1). Shared by
//! both backends: VMX applies them to the writes that exit (its CR0/CR4 guest/host masks
//! cover every bit these rules concern), SVM to every CR0/CR3/CR4 write, which it
//! intercepts. Which bits exist comes from the guest's CPUID ([`CrPolicy`]), so a guest
//! cannot turn on a feature it was not offered. Pure, host-tested.

use super::cpuid::CpuidResult;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_CET: u64 = 1 << 23;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;
pub const EFER_FFXSR: u64 = 1 << 14;
pub const EFER_TCE: u64 = 1 << 15;

/// What the guest's CPUID offers, as far as control registers are concerned (the default
/// offers nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrPolicy {
    /// CR4 bits the guest may set.
    pub cr4_valid: u64,
    /// EFER bits the guest may set (LMA included when long mode is offered).
    pub efer_valid: u64,
    /// The guest's physical-address width (MAXPHYADDR): CR3 bits above it are reserved.
    pub phys_bits: u32,
}

/// The guest's control state a check depends on (the values the guest sees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code (with EFER.LMA).
    pub cs_long: bool,
}

fn bit(word: u32, n: u32) -> bool {
    word & (1 << n) != 0
}

impl CrPolicy {
    /// The policy for a guest whose CPUID leaves 1, 7.0 and 0x80000001 are `l1`, `l7`
    /// and `e1` (the guest-visible values), on a CPU whose MAXPHYADDR is `phys_bits`.
    pub fn from_cpuid(l1: CpuidResult, l7: CpuidResult, e1: CpuidResult, phys_bits: u32) -> Self {
        // (CR4 bit, offered?)
        let cr4 = [
            (0, bit(l1.edx, 1)),                     // VME
            (1, bit(l1.edx, 1)),                     // PVI
            (2, bit(l1.edx, 4)),                     // TSD (TSC)
            (3, bit(l1.edx, 2)),                     // DE
            (4, bit(l1.edx, 3)),                     // PSE
            (5, bit(l1.edx, 6)),                     // PAE
            (6, bit(l1.edx, 7)),                     // MCE
            (7, bit(l1.edx, 13)),                    // PGE
            (8, true),                               // PCE
            (9, bit(l1.edx, 24)),                    // OSFXSR (FXSR)
            (10, bit(l1.edx, 25)),                   // OSXMMEXCPT (SSE)
            (11, bit(l7.ecx, 2)),                    // UMIP
            (12, bit(l7.ecx, 16)),                   // LA57
            (13, bit(l1.ecx, 5)),                    // VMXE
            (14, bit(l1.ecx, 6)),                    // SMXE
            (16, bit(l7.ebx, 0)),                    // FSGSBASE
            (17, bit(l1.ecx, 17)),                   // PCIDE
            (18, bit(l1.ecx, 26)),                   // OSXSAVE (XSAVE)
            (19, bit(l7.ecx, 23)),                   // KL
            (20, bit(l7.ebx, 7)),                    // SMEP
            (21, bit(l7.ebx, 20)),                   // SMAP
            (22, bit(l7.ecx, 3)),                    // PKE
            (23, bit(l7.ecx, 7) || bit(l7.edx, 20)), // CET (shadow stacks or IBT)
            (24, bit(l7.ecx, 31)),                   // PKS
        ];
        let cr4_valid = cr4
            .iter()
            .filter(|(_, on)| *on)
            .fold(0, |m, (b, _)| m | 1u64 << b);
        let efer = [
            (EFER_SCE, bit(e1.edx, 11)),
            (EFER_LME | EFER_LMA, bit(e1.edx, 29)),
            (EFER_NXE, bit(e1.edx, 20)),
            (EFER_FFXSR, bit(e1.edx, 25)),
            (EFER_TCE, bit(e1.ecx, 17)),
        ];
        let efer_valid = efer.iter().filter(|(_, on)| *on).fold(0, |m, (b, _)| m | b);
        CrPolicy {
            cr4_valid,
            efer_valid,
            phys_bits: phys_bits.clamp(32, 52),
        }
    }
}

impl CrPolicy {
    /// The policy for this machine's guests: their CPUID as `cpuid::guest_cpuid` shapes
    /// it from the host's, and the host's MAXPHYADDR (nested paging gives guests the same).
    #[cfg(target_os = "none")]
    pub fn for_guests() -> Self {
        use super::cpuid::{guest_cpuid, CpuidContext};
        let ctx = CpuidContext {
            vcpu_id: 0,
            domid: 0,
            vcpus: 1,
            cr4: 0,
            fast_strings: crate::arch::x86::strings::fast(),
        };
        let leaf = |l: u32| {
            let r = crate::arch::x86::cpu::cpuid_guarded(l, 0);
            let host = CpuidResult {
                eax: r.eax,
                ebx: r.ebx,
                ecx: r.ecx,
                edx: r.edx,
            };
            guest_cpuid(l, 0, host, &ctx)
        };
        let e8 = leaf(0x8000_0008);
        let phys_bits = if e8.eax & 0xff != 0 {
            e8.eax & 0xff
        } else {
            36
        };
        CrPolicy::from_cpuid(leaf(1), leaf(7), leaf(0x8000_0001), phys_bits)
    }
}

/// A write of `new` to CR0 (MOV, or LMSW/CLTS turned into the CR0 value they produce).
/// Err: #GP(0).
pub fn check_cr0(s: &CrState, new: u64) -> Result<(), ()> {
    if new >> 32 != 0 {
        return Err(()); // bits 63:32 are reserved
    }
    if new & CR0_PG != 0 && new & CR0_PE == 0 {
        return Err(());
    }
    if new & CR0_NW != 0 && new & CR0_CD == 0 {
        return Err(());
    }
    let paging = new & CR0_PG != 0;
    let was_paging = s.cr0 & CR0_PG != 0;
    if paging && !was_paging && s.efer & EFER_LME != 0 {
        // Activating long mode needs PAE, and is refused from a code segment with L set.
        if s.cr4 & CR4_PAE == 0 || s.cs_long {
            return Err(());
        }
    }
    if !paging && was_paging {
        // Paging cannot be turned off from 64-bit code, nor with PCIDs on.
        if (s.efer & EFER_LMA != 0 && s.cs_long) || s.cr4 & CR4_PCIDE != 0 {
            return Err(());
        }
    }
    if new & CR0_WP == 0 && s.cr4 & CR4_CET != 0 {
        return Err(()); // CET needs WP
    }
    Ok(())
}

/// A MOV of `new` to CR4. Err: #GP(0).
pub fn check_cr4(s: &CrState, new: u64, p: &CrPolicy) -> Result<(), ()> {
    if new & !p.cr4_valid != 0 {
        return Err(());
    }
    let long = s.efer & EFER_LMA != 0;
    if long && new & CR4_PAE == 0 {
        return Err(()); // PAE cannot be cleared in long mode
    }
    if long && (new ^ s.cr4) & CR4_LA57 != 0 {
        return Err(()); // the paging depth cannot change in long mode
    }
    if new & CR4_PCIDE != 0 && s.cr4 & CR4_PCIDE == 0 && (!long || s.cr3 & 0xfff != 0) {
        return Err(()); // PCIDs only in long mode, starting from PCID 0
    }
    if new & CR4_CET != 0 && s.cr0 & CR0_WP == 0 {
        return Err(());
    }
    Ok(())
}

/// A MOV of `new` to CR3 (`new` already truncated to 32 bits outside 64-bit mode). Ok: the
/// value CR3 takes (the PCID no-flush bit 63 removed). Err: #GP(0).
pub fn check_cr3(s: &CrState, new: u64, p: &CrPolicy) -> Result<u64, ()> {
    if s.efer & EFER_LMA == 0 {
        // Legacy and PAE paging: 32 bits, the low ones ignored, none reserved.
        return Ok(new & 0xffff_ffff);
    }
    let value = if s.cr4 & CR4_PCIDE != 0 {
        new & !(1 << 63)
    } else {
        new
    };
    if value >> p.phys_bits != 0 {
        return Err(()); // an address beyond MAXPHYADDR
    }
    Ok(value)
}

/// A WRMSR of `new` to EFER. Ok: the value EFER takes (LMA is the processor's: a write
/// keeps it). Err: #GP(0).
pub fn check_efer(s: &CrState, new: u64, p: &CrPolicy) -> Result<u64, ()> {
    if new & !p.efer_valid != 0 {
        return Err(());
    }
    if s.cr0 & CR0_PG != 0 && (new ^ s.efer) & EFER_LME != 0 {
        return Err(()); // LME cannot change while paging is on
    }
    Ok((new & !EFER_LMA) | (s.efer & EFER_LMA))
}

/// The CR0 an LMSW with `source` produces: it loads PE, MP, EM and TS, and can set PE but
/// never clear it.
pub const fn lmsw(cr0: u64, source: u16) -> u64 {
    (cr0 & !0xe) | (source as u64 & 0xf) | (cr0 & CR0_PE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> CpuidResult {
        CpuidResult {
            eax: !0,
            ebx: !0,
            ecx: !0,
            edx: !0,
        }
    }

    /// A CPU offering the usual features but not VMX, SMX, LA57, PKS, KL or CET.
    fn policy() -> CrPolicy {
        let mut l1 = all();
        l1.ecx &= !((1 << 5) | (1 << 6));
        let mut l7 = all();
        l7.ecx &= !((1 << 16) | (1 << 31) | (1 << 23) | (1 << 7));
        l7.edx &= !(1 << 20);
        CrPolicy::from_cpuid(l1, l7, all(), 40)
    }

    fn long_mode() -> CrState {
        CrState {
            cr0: CR0_PE | CR0_PG | CR0_WP | 0x10,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA | EFER_SCE,
            cs_long: true,
        }
    }

    fn protected() -> CrState {
        CrState {
            cr0: CR0_PE | 0x10,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs_long: false,
        }
    }

    #[test]
    fn policy_follows_cpuid() {
        let p = policy();
        assert_eq!(p.cr4_valid & (1 << 13), 0, "VMXE not offered");
        assert_eq!(p.cr4_valid & CR4_LA57, 0);
        assert_ne!(p.cr4_valid & CR4_PAE, 0);
        assert_ne!(p.cr4_valid & CR4_PCIDE, 0);
        assert_eq!(p.cr4_valid >> 25, 0);
        assert_eq!(p.cr4_valid & (1 << 15), 0, "bit 15 is reserved");
        let none = CrPolicy::from_cpuid(
            CpuidResult::default(),
            CpuidResult::default(),
            CpuidResult::default(),
            36,
        );
        assert_eq!(none.cr4_valid, 1 << 8, "only PCE needs no CPUID bit");
        assert_eq!(none.efer_valid, 0);
        assert_eq!(
            p.efer_valid,
            EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_FFXSR | EFER_TCE
        );
        assert_eq!(CrPolicy::from_cpuid(all(), all(), all(), 80).phys_bits, 52);
    }

    #[test]
    fn cr0_rules() {
        let s = protected();
        assert_eq!(check_cr0(&s, CR0_PG), Err(()), "PG without PE");
        assert_eq!(check_cr0(&s, CR0_PE | CR0_NW), Err(()), "NW without CD");
        assert_eq!(check_cr0(&s, CR0_PE | CR0_NW | CR0_CD), Ok(()));
        assert_eq!(check_cr0(&s, CR0_PE | 1 << 32), Err(()), "bit 32");
        assert_eq!(check_cr0(&s, CR0_PE | CR0_PG), Ok(()), "32-bit paging");
        assert_eq!(check_cr0(&s, 0), Ok(()), "back to real mode");
        let lme = CrState {
            efer: EFER_LME,
            ..s
        };
        assert_eq!(check_cr0(&lme, CR0_PE | CR0_PG), Err(()), "LME without PAE");
        let lme_pae = CrState {
            cr4: CR4_PAE,
            ..lme
        };
        assert_eq!(check_cr0(&lme_pae, CR0_PE | CR0_PG), Ok(()));
        let lme_pae_l = CrState {
            cs_long: true,
            ..lme_pae
        };
        assert_eq!(
            check_cr0(&lme_pae_l, CR0_PE | CR0_PG),
            Err(()),
            "from CS.L=1"
        );
        let l = long_mode();
        assert_eq!(check_cr0(&l, CR0_PE), Err(()), "PG off in 64-bit code");
        assert_eq!(
            check_cr0(
                &CrState {
                    cs_long: false,
                    ..l
                },
                CR0_PE
            ),
            Ok(()),
            "PG off from compatibility mode"
        );
        assert_eq!(check_cr0(&l, l.cr0 | CR0_TS), Ok(()));
        let pcid = CrState {
            cr4: CR4_PAE | CR4_PCIDE,
            cs_long: false,
            ..l
        };
        assert_eq!(check_cr0(&pcid, CR0_PE), Err(()), "PG off with PCIDE");
        let cet = CrState {
            cr4: CR4_PAE | CR4_CET,
            ..l
        };
        assert_eq!(check_cr0(&cet, l.cr0 & !CR0_WP), Err(()), "WP off with CET");
    }

    #[test]
    fn cr4_rules() {
        let p = policy();
        let l = long_mode();
        assert_eq!(check_cr4(&l, CR4_PAE | 1 << 63, &p), Err(()));
        assert_eq!(check_cr4(&l, CR4_PAE | 1 << 15, &p), Err(()));
        assert_eq!(check_cr4(&l, CR4_PAE | 1 << 13, &p), Err(()), "VMXE");
        assert_eq!(check_cr4(&l, CR4_PAE | CR4_LA57, &p), Err(()), "LA57");
        assert_eq!(check_cr4(&l, 0, &p), Err(()), "PAE off in long mode");
        assert_eq!(check_cr4(&l, CR4_PAE | 1 << 7 | 1 << 18, &p), Ok(()));
        assert_eq!(check_cr4(&l, CR4_PAE | CR4_PCIDE, &p), Ok(()));
        let pcid_nonzero = CrState { cr3: 0x1001, ..l };
        assert_eq!(
            check_cr4(&pcid_nonzero, CR4_PAE | CR4_PCIDE, &p),
            Err(()),
            "PCIDE with CR3[11:0] != 0"
        );
        let s = protected();
        assert_eq!(
            check_cr4(&s, CR4_PCIDE, &p),
            Err(()),
            "PCIDE outside long mode"
        );
        assert_eq!(check_cr4(&s, 0, &p), Ok(()));
        assert_eq!(check_cr4(&s, CR4_PAE, &p), Ok(()));
        let with_cet = CrPolicy {
            cr4_valid: p.cr4_valid | CR4_CET,
            ..p
        };
        let no_wp = CrState {
            cr0: l.cr0 & !CR0_WP,
            ..l
        };
        assert_eq!(check_cr4(&no_wp, CR4_PAE | CR4_CET, &with_cet), Err(()));
        assert_eq!(check_cr4(&l, CR4_PAE | CR4_CET, &with_cet), Ok(()));
    }

    #[test]
    fn cr3_rules() {
        let p = policy();
        let l = long_mode();
        assert_eq!(check_cr3(&l, 1 << 56, &p), Err(()));
        assert_eq!(check_cr3(&l, 1 << 40, &p), Err(()), "bit 40 with 40 bits");
        assert_eq!(check_cr3(&l, (1 << 40) - 4096, &p), Ok((1 << 40) - 4096));
        assert_eq!(
            check_cr3(&l, 1 << 63, &p),
            Err(()),
            "no-flush without PCIDE"
        );
        let pcid = CrState {
            cr4: CR4_PAE | CR4_PCIDE,
            ..l
        };
        assert_eq!(check_cr3(&pcid, 1 << 63 | 0x2005, &p), Ok(0x2005));
        let pae = CrState {
            cr0: CR0_PE | CR0_PG,
            cr4: CR4_PAE,
            ..protected()
        };
        assert_eq!(
            check_cr3(&pae, 0x1234_5678, &p),
            Ok(0x1234_5678),
            "low bits ignored"
        );
    }

    #[test]
    fn efer_rules() {
        let p = policy();
        let l = long_mode();
        assert_eq!(check_efer(&l, l.efer | 1 << 1, &p), Err(()), "bit 1");
        assert_eq!(check_efer(&l, l.efer | 1 << 12, &p), Err(()), "SVME");
        assert_eq!(check_efer(&l, l.efer | 1 << 13, &p), Err(()), "LMSLE");
        assert_eq!(check_efer(&l, EFER_SCE | EFER_LMA, &p), Err(()), "LME off");
        assert_eq!(
            check_efer(&l, EFER_LME | EFER_NXE, &p),
            Ok(EFER_LME | EFER_NXE | EFER_LMA),
            "LMA kept"
        );
        let s = protected();
        assert_eq!(check_efer(&s, EFER_LME, &p), Ok(EFER_LME));
        assert_eq!(check_efer(&s, EFER_LMA, &p), Ok(0), "LMA is read-only");
        let paging = CrState {
            cr0: CR0_PE | CR0_PG,
            ..s
        };
        assert_eq!(check_efer(&paging, EFER_LME, &p), Err(()));
        let no_nx = CrPolicy {
            efer_valid: p.efer_valid & !EFER_NXE,
            ..p
        };
        assert_eq!(check_efer(&s, EFER_NXE, &no_nx), Err(()));
    }

    #[test]
    fn lmsw_values() {
        assert_eq!(lmsw(0x11, 0xf), 0x1f);
        assert_eq!(lmsw(0x8000_0011, 0), 0x8000_0011, "PE stays");
        assert_eq!(lmsw(0x10, 0x1), 0x11, "PE can be set");
        assert_eq!(lmsw(0x18, 0xfff0), 0x10, "only bits 3:0 load");
    }
}
