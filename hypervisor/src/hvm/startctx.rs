//! Xen's `vcpu_hvm_context` (`VCPUOP_initialise` for HVM/PVH vCPUs) checked and turned
//! into a [`StartState`]: the checks of Xen's `arch_set_info_hvm_guest` and
//! `check_segment` (xen/arch/x86/hvm/domain.c), plus those VM entry would make (a state
//! Xen accepts but the hardware refuses crashes the domain at its first entry there; here
//! it is `-EINVAL`). Pure, host-tested.

use super::crcheck::{self, CrPolicy};
use super::{GuestRegs, StartSegment, StartState};
use xen_abi::vcpu::{VcpuHvmContext, VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B};

/// RFLAGS bits a start state may set: CF, PF, AF, ZF, SF, TF, IF, DF, OF, IOPL, NT, RF,
/// AC, VIF, VIP, ID (VM is not: no virtual-8086 start).
const RFLAGS_VALID: u64 = 0x003d_7fd5;
/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 1 << 1;
const CR4_CET: u64 = 1 << 23;
const CR0_ET: u64 = 1 << 4;

/// Which register a segment of a 32-bit context is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SegKind {
    Cs,
    Ss,
    DsEs,
    Tr,
}

/// A segment of a `VCPU_HVM_MODE_32B` context, checked as Xen's `check_segment` (after
/// setting the accessed bit, or the busy bit for TR, of a present segment), and with the
/// limit/granularity pairing VM entry requires.
fn segment32(base: u32, limit: u32, ar: u16, kind: SegKind) -> Result<StartSegment, ()> {
    if ar & 0xf000 != 0 {
        return Err(()); // attribute bits 12-15
    }
    let mut attr = ar;
    let present = attr & 0x80 != 0;
    if present {
        attr |= if kind == SegKind::Tr { 2 } else { 1 };
    }
    let seg = StartSegment {
        base: base.into(),
        limit,
        attr,
    };
    if attr == 0 {
        // Null: only DS and ES may be.
        return if kind == SegKind::DsEs {
            Ok(seg)
        } else {
            Err(())
        };
    }
    let typ = attr & 0xf;
    let system = attr & 0x10 == 0;
    match kind {
        // TR: a busy 32-bit TSS.
        SegKind::Tr if !system || typ != 0xb => return Err(()),
        SegKind::Tr => {}
        _ if system => return Err(()),
        _ => {}
    }
    if !present {
        return Err(());
    }
    let ok = match kind {
        SegKind::Cs => typ & 0x8 != 0,                     // code
        SegKind::Ss => typ & 0x8 == 0 && typ & 0x2 != 0,   // writable data
        SegKind::DsEs => typ & 0x8 == 0 || typ & 0x2 != 0, // data, or readable code
        SegKind::Tr => true,
    };
    if !ok {
        return Err(());
    }
    // VM entry: limit bits 11:0 not all ones need G = 0; bits 31:20 set need G = 1.
    let g = attr & (1 << 11) != 0;
    if (limit & 0xfff != 0xfff && g) || (limit >> 20 != 0 && !g) {
        return Err(());
    }
    Ok(seg)
}

fn dpl(s: &StartSegment) -> u16 {
    (s.attr >> 5) & 3
}

/// Checks a `vcpu_hvm_context` and turns it into a start state, as Xen's
/// `arch_set_info_hvm_guest` does (Err: Xen's `-EINVAL`): non-zero padding; an unknown
/// mode; 32-bit mode: segments (see [`segment32`]), EIP beyond the CS limit, SS.DPL ≠
/// CS.DPL, DS or ES DPL above CS's, EFER.LMA without LME; 64-bit mode: a non-canonical
/// RIP, paging, PAE or EFER.LME off; both: CR4 or EFER bits the guest's CPUID does not
/// offer (`p`). Beyond Xen, states VM entry refuses are refused here too: CR0 PG without
/// PE or NW without CD, long mode (LME with PG) without PAE, a 64-bit CS with D set, CR3
/// beyond MAXPHYADDR in long mode, PCIDE outside long mode, CET without WP, real mode
/// with a DPL other than 0. EFER.LMA follows LME and PG (Xen sets it with LME alone);
/// RFLAGS keeps its defined bits (never VM) with bit 1 set; CR0.ET is set.
pub fn start_state(ctx: &VcpuHvmContext, p: &CrPolicy) -> Result<StartState, ()> {
    use crcheck::{CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PCIDE, EFER_LMA, EFER_LME};
    if ctx.pad != 0 {
        return Err(());
    }
    let mut st = match ctx.mode {
        VCPU_HVM_MODE_32B => {
            let r = ctx.x86_32();
            if r.pad1 != 0 || r.pad2 != [0; 3] {
                return Err(());
            }
            let cs = segment32(r.cs_base, r.cs_limit, r.cs_ar, SegKind::Cs)?;
            let ds = segment32(r.ds_base, r.ds_limit, r.ds_ar, SegKind::DsEs)?;
            let ss = segment32(r.ss_base, r.ss_limit, r.ss_ar, SegKind::Ss)?;
            let es = segment32(r.es_base, r.es_limit, r.es_ar, SegKind::DsEs)?;
            let tr = segment32(r.tr_base, r.tr_limit, r.tr_ar, SegKind::Tr)?;
            // The limit is checked as Xen does (scaled when G is set), in 32 bits.
            let limit = if cs.attr & (1 << 11) != 0 {
                (cs.limit << 12) | 0xfff
            } else {
                cs.limit
            };
            if r.eip > limit || dpl(&ss) != dpl(&cs) {
                return Err(());
            }
            let present = |s: &StartSegment| s.attr & 0x80 != 0;
            if (present(&ds) && dpl(&ds) > dpl(&cs)) || (present(&es) && dpl(&es) > dpl(&cs)) {
                return Err(());
            }
            if r.efer & EFER_LMA != 0 && r.efer & EFER_LME == 0 {
                return Err(());
            }
            StartState {
                regs: GuestRegs {
                    rax: r.eax.into(),
                    rbx: r.ebx.into(),
                    rcx: r.ecx.into(),
                    rdx: r.edx.into(),
                    rsi: r.esi.into(),
                    rdi: r.edi.into(),
                    rbp: r.ebp.into(),
                    ..GuestRegs::default()
                },
                rsp: r.esp.into(),
                rip: r.eip.into(),
                rflags: r.eflags.into(),
                cr0: r.cr0.into(),
                cr3: r.cr3.into(),
                cr4: r.cr4.into(),
                efer: r.efer,
                cs,
                ds,
                ss,
                es,
                tr,
            }
        }
        VCPU_HVM_MODE_64B => {
            let r = ctx.x86_64();
            // Canonical for 48-bit linear addresses (sign-extended from bit 47).
            let canonical = ((r.rip << 16) as i64 >> 16) as u64 == r.rip;
            if !canonical || r.cr0 & CR0_PG == 0 || r.cr4 & CR4_PAE == 0 || r.efer & EFER_LME == 0 {
                return Err(());
            }
            let flat = |attr| StartSegment {
                base: 0,
                limit: u32::MAX,
                attr,
            };
            StartState {
                regs: GuestRegs {
                    rax: r.rax,
                    rbx: r.rbx,
                    rcx: r.rcx,
                    rdx: r.rdx,
                    rsi: r.rsi,
                    rdi: r.rdi,
                    rbp: r.rbp,
                    ..GuestRegs::default()
                },
                rsp: r.rsp,
                rip: r.rip,
                rflags: r.rflags,
                cr0: r.cr0,
                cr3: r.cr3,
                cr4: r.cr4,
                efer: r.efer,
                cs: flat(0xa9b),
                ds: flat(0xc93),
                ss: flat(0xc93),
                es: flat(0xc93),
                tr: StartSegment {
                    base: 0,
                    limit: 0x67,
                    attr: 0x8b,
                },
            }
        }
        _ => return Err(()),
    };
    // CPUID-offered CR4 and EFER bits only (LMA counts as offered with long mode).
    if st.cr4 & !p.cr4_valid != 0 || st.efer & !p.efer_valid != 0 {
        return Err(());
    }
    let (cr0, cr4) = (st.cr0, st.cr4);
    let paging = cr0 & CR0_PG != 0;
    let long = paging && st.efer & EFER_LME != 0;
    let bad_cr0 =
        cr0 >> 32 != 0 || (paging && cr0 & CR0_PE == 0) || (cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0);
    let cs_l = st.cs.attr & (1 << 9) != 0;
    let cs_d = st.cs.attr & (1 << 10) != 0;
    let bad_long = long && (cr4 & CR4_PAE == 0 || (cs_l && cs_d));
    let bad_cr4 = (cr4 & CR4_PCIDE != 0 && !long) || (cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0);
    let bad_real = cr0 & CR0_PE == 0 && (dpl(&st.cs) != 0 || dpl(&st.ss) != 0);
    if bad_cr0 || bad_long || bad_cr4 || bad_real {
        return Err(());
    }
    st.efer = if long {
        st.efer | EFER_LMA
    } else {
        st.efer & !EFER_LMA
    };
    if long {
        let state = crcheck::CrState {
            cr0,
            cr3: 0,
            cr4,
            efer: st.efer,
            cs_long: cs_l,
        };
        st.cr3 = crcheck::check_cr3(&state, st.cr3, p)?;
    }
    st.cr0 |= CR0_ET;
    st.rflags = (st.rflags & RFLAGS_VALID) | RFLAGS_FIXED;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hvm::cpuid::CpuidResult;
    use xen_abi::vcpu::{VcpuHvmX86_32, VcpuHvmX86_64};

    fn policy() -> CrPolicy {
        let all = CpuidResult {
            eax: !0,
            ebx: !0,
            ecx: !0,
            edx: !0,
        };
        let mut l1 = all;
        l1.ecx &= !((1 << 5) | (1 << 6)); // no VMX, SMX
        let mut l7 = all;
        l7.ecx &= !((1 << 16) | (1 << 31) | (1 << 23) | (1 << 7)); // no LA57, PKS, KL, CET
        l7.edx &= !(1 << 20);
        CrPolicy::from_cpuid(l1, l7, all, 40)
    }

    fn long64() -> VcpuHvmX86_64 {
        VcpuHvmX86_64 {
            rip: 0xffff_8000_0010_0000,
            rsp: 0x9000,
            rdi: 7,
            rflags: 0x202,
            cr0: 0x8000_0011,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        }
    }

    fn flat32() -> VcpuHvmX86_32 {
        VcpuHvmX86_32 {
            eip: 0x10_0000,
            ebx: 3,
            eflags: 0x2,
            cr0: 0x11,
            cs_limit: u32::MAX,
            ds_limit: u32::MAX,
            ss_limit: u32::MAX,
            es_limit: u32::MAX,
            tr_limit: 0x67,
            cs_ar: 0xc9a,
            ds_ar: 0xc92,
            ss_ar: 0xc92,
            es_ar: 0xc92,
            tr_ar: 0x89,
            ..Default::default()
        }
    }

    fn check64(r: VcpuHvmX86_64) -> Result<StartState, ()> {
        start_state(&VcpuHvmContext::from_64(&r), &policy())
    }

    fn check32(r: VcpuHvmX86_32) -> Result<StartState, ()> {
        start_state(&VcpuHvmContext::from_32(&r), &policy())
    }

    #[test]
    fn long_mode_context() {
        let s = check64(long64()).unwrap();
        assert_eq!(s.efer, 0x500, "LME and LMA");
        assert_eq!(
            (s.rip, s.rsp, s.regs.rdi),
            (0xffff_8000_0010_0000, 0x9000, 7)
        );
        assert_eq!(s.cs.attr, 0xa9b);
        assert_eq!((s.tr.attr, s.tr.limit), (0x8b, 0x67));
        // Undefined RFLAGS bits and VM dropped, bit 1 forced.
        let s = check64(VcpuHvmX86_64 {
            rflags: 1 << 17 | 1 << 63 | 1 << 9,
            ..long64()
        })
        .unwrap();
        assert_eq!(s.rflags, 0x202);
        let bad = [
            VcpuHvmX86_64 {
                rip: 0x0000_8000_0000_0000,
                ..long64()
            },
            VcpuHvmX86_64 {
                cr0: 0x11,
                ..long64()
            },
            VcpuHvmX86_64 { cr4: 0, ..long64() },
            VcpuHvmX86_64 {
                efer: 0x400,
                ..long64()
            },
            VcpuHvmX86_64 {
                efer: 0x500 | 1 << 12, // SVME
                ..long64()
            },
            VcpuHvmX86_64 {
                cr4: 0x20 | 1 << 13, // VMXE
                ..long64()
            },
            VcpuHvmX86_64 {
                cr0: 0x8000_0010, // PG without PE
                ..long64()
            },
            VcpuHvmX86_64 {
                cr3: 1 << 40,
                ..long64()
            },
        ];
        for (i, r) in bad.into_iter().enumerate() {
            assert_eq!(check64(r).err(), Some(()), "case {i}");
        }
        let mut c = VcpuHvmContext::from_64(&long64());
        c.pad = 1;
        assert_eq!(start_state(&c, &policy()).err(), Some(()));
        c.pad = 0;
        c.mode = 2;
        assert_eq!(start_state(&c, &policy()).err(), Some(()));
    }

    #[test]
    fn protected_mode_context() {
        let s = check32(flat32()).unwrap();
        // Accessed bits set, TR made busy.
        assert_eq!((s.cs.attr, s.ss.attr, s.tr.attr), (0xc9b, 0xc93, 0x8b));
        assert_eq!((s.rip, s.regs.rbx, s.cr0, s.efer), (0x10_0000, 3, 0x11, 0));
        // Null DS and ES are allowed.
        assert!(check32(VcpuHvmX86_32 {
            ds_ar: 0,
            es_ar: 0,
            ..flat32()
        })
        .is_ok());
        // LME without paging: LMA stays clear.
        assert_eq!(
            check32(VcpuHvmX86_32 {
                efer: 0x100,
                ..flat32()
            })
            .unwrap()
            .efer,
            0x100
        );
        let bad = [
            VcpuHvmX86_32 {
                pad1: 1,
                ..flat32()
            },
            VcpuHvmX86_32 {
                pad2: [0, 1, 0],
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_ar: 0,
                ..flat32()
            },
            VcpuHvmX86_32 {
                ss_ar: 0,
                ..flat32()
            },
            VcpuHvmX86_32 {
                tr_ar: 0,
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_ar: 0xc9a | 0x1000, // attribute bit 12
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_ar: 0xc92, // data in CS
                ..flat32()
            },
            VcpuHvmX86_32 {
                ss_ar: 0xc90, // read-only SS
                ..flat32()
            },
            VcpuHvmX86_32 {
                ds_ar: 0xc98, // execute-only code in DS
                ..flat32()
            },
            VcpuHvmX86_32 {
                ds_ar: 0xc12, // not present
                ..flat32()
            },
            VcpuHvmX86_32 {
                ds_ar: 0xc82, // system segment
                ..flat32()
            },
            VcpuHvmX86_32 {
                tr_ar: 0x83, // 16-bit TSS
                ..flat32()
            },
            VcpuHvmX86_32 {
                tr_ar: 0x99, // code segment for TR
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_limit: 0xffff,
                cs_ar: 0x49a,
                eip: 0x1_0000,
                ..flat32()
            },
            VcpuHvmX86_32 {
                ss_ar: 0xcf2, // SS.DPL 3, CS.DPL 0
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_ar: 0xcba,
                ss_ar: 0xcb2,
                ds_ar: 0xcf2, // DS.DPL 3 > CS.DPL 1
                ..flat32()
            },
            VcpuHvmX86_32 {
                efer: 0x400, // LMA without LME
                ..flat32()
            },
            VcpuHvmX86_32 {
                cr0: 0x8000_0011,
                efer: 0x100, // long mode without PAE
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_limit: 0x10_0000, // limit bit 20 with G clear
                cs_ar: 0x49a,
                eip: 0,
                ..flat32()
            },
            VcpuHvmX86_32 {
                cs_limit: 0x1234, // G set with limit bits 11:0 not all ones
                ..flat32()
            },
            VcpuHvmX86_32 {
                cr0: 0x6000_0010, // real mode with CS.DPL 1
                cs_ar: 0xcba,
                ss_ar: 0xcb2,
                ..flat32()
            },
        ];
        for (i, r) in bad.into_iter().enumerate() {
            assert_eq!(check32(r).err(), Some(()), "case {i}");
        }
        // EIP at the scaled limit of a granular CS is fine.
        assert!(check32(VcpuHvmX86_32 {
            cs_limit: 0xf_ffff,
            eip: 0xffff_fff0,
            ..flat32()
        })
        .is_ok());
    }
}
