//! The CPUID a guest sees: the host's leaves, filtered, plus the Xen leaves at 0x40000000.
//!
//! Policy (Xen `xen/arch/x86/cpuid.c` and the PVH spec §3.1, §6.4): the guest keeps the
//! real vendor and most features, learns it runs under a hypervisor (leaf 1 ECX bit 31),
//! and must not see what we do not virtualize: VMX/SVM (no nesting), SMX, MONITOR/MWAIT,
//! architectural performance monitoring, SME/SEV, LA57 (the hypercall-argument walker
//! handles 4-level paging only) and the TSC-deadline timer (no LAPIC timer yet).
//!
//! The fast-string hints (ERMS, FSRM and leaf 7.1's FZLRM, FSRS, FSRCS) promise that
//! `rep movsb`/`rep stosb` are the fastest way to copy and clear; guests then use them for
//! every `memcpy`, copy to user and page clear. They are passed on only where that is true
//! on this machine, as measured at boot ([`rep_movsb_is_fast`]): an emulator that runs
//! `rep movsb` one byte per step (QEMU's TCG does) would make every guest copy several
//! times slower than the `rep movsq` or unrolled loops guests use without the hints.

/// One CPUID result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Base of the Xen leaves.
pub const XEN_CPUID_BASE: u32 = 0x4000_0000;
/// Highest Xen leaf we answer (base + 5, as Xen does).
pub const XEN_CPUID_MAX: u32 = XEN_CPUID_BASE + 5;
/// The Xen version we report in leaf base+1: 4.19 (Linux needs major >= 4).
pub const XEN_VERSION: (u32, u32) = (4, 19);
/// The MSR through which a guest asks for the hypercall page (leaf base+2 EBX).
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;

/// Leaf base+4 EAX: EBX holds the vCPU id.
const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf base+4 EAX: ECX holds the domain id.
const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// Leaf 0x40000004 EAX: HVMOP_set_evtchn_upcall_vector (per-vCPU upcall vectors) works.
const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// Who is asking: the facts the guest-visible values depend on.
#[derive(Clone, Copy, Debug)]
pub struct CpuidContext {
    pub vcpu_id: u32,
    pub domid: u16,
    pub vcpus: u32,
    /// The guest's CR4: the OSXSAVE and OSPKE bits of CPUID mirror it, not the host's.
    pub cr4: u64,
    /// Whether `rep movsb` is really fast here (measured at boot): the fast-string hints
    /// are passed on only then.
    pub fast_strings: bool,
}

/// CPUID.7.0:EBX bit 9: enhanced REP MOVSB/STOSB.
const LEAF7_EBX_ERMS: u32 = 1 << 9;
/// CPUID.7.0:EDX bit 4: fast short REP MOVSB.
const LEAF7_EDX_FSRM: u32 = 1 << 4;
/// CPUID.7.1:EAX bits 10-12: fast zero-length REP MOVSB, fast short REP STOSB, fast short
/// REP CMPSB/SCASB.
const LEAF7_1_EAX_FAST_SHORT: u32 = (1 << 10) | (1 << 11) | (1 << 12);

/// Whether `rep movsb` deserves the fast-string hints, from the cycles one copy of the
/// same buffer took with `rep movsb` and with `rep movsq`: at most half as slow again.
/// (On CPUs with ERMS the two take about the same time for a large aligned copy; QEMU
/// 7.2's TCG takes five times as long for `rep movsb`, Bochs eight.)
pub fn rep_movsb_is_fast(movsb_cycles: u64, movsq_cycles: u64) -> bool {
    movsb_cycles.saturating_mul(2) <= movsq_cycles.saturating_mul(3)
}

/// The guest-visible result of CPUID(`leaf`, `subleaf`), given what the host returned for
/// the same leaf (ignored for the Xen leaves).
pub fn guest_cpuid(leaf: u32, subleaf: u32, host: CpuidResult, ctx: &CpuidContext) -> CpuidResult {
    if (XEN_CPUID_BASE..XEN_CPUID_BASE + 0x1_0000).contains(&leaf) {
        return xen_leaf(leaf, subleaf, ctx);
    }
    let mut r = host;
    match leaf {
        1 => {
            // ECX: clear MONITOR(3), VMX(5), SMX(6), TSC-deadline(24); set x2APIC(21),
            // which every vCPU starts in, and hypervisor(31).
            r.ecx &= !((1 << 3) | (1 << 5) | (1 << 6) | (1 << 24));
            r.ecx |= (1 << 21) | (1 << 31);
            // OSXSAVE (27) reports the guest's own CR4.OSXSAVE (18).
            r.ecx = (r.ecx & !(1 << 27)) | (((ctx.cr4 >> 18) & 1) as u32) << 27;
            // ECX: also no debug store, SpeedStep, thermal monitor, xTPR, perfmon
            // capabilities or DCA: all need MSRs or platform parts we do not emulate.
            r.ecx &=
                !((1 << 2) | (1 << 4) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 15) | (1 << 18));
            // EDX: the APIC is present (it is emulated); no machine check (MCE, MCA),
            // debug store, ACPI thermal, thermal monitor or PBE.
            r.edx |= 1 << 9;
            r.edx &= !((1 << 7) | (1 << 14) | (1 << 21) | (1 << 22) | (1 << 29) | (1 << 31));
            // EBX: initial APIC id in 31..24, logical processor count in 23..16.
            r.ebx = (r.ebx & 0xffff) | (ctx.vcpu_id << 24) | ((ctx.vcpus.min(255)) << 16);
        }
        // MONITOR/MWAIT, thermal and power management (APERF/MPERF MSRs), performance
        // monitoring: none of it is virtualized.
        5 | 6 | 0xa => r = CpuidResult::default(),
        // XSAVES/XRSTORS need the IA32_XSS MSR and supervisor state, which are not
        // virtualized; the compacted format (XSAVEC) goes with them: the sizes this
        // leaf reports are for the standard format only. Guests use XSAVE/XSAVEOPT.
        // ECX:EDX (the IA32_XSS components) are zero: no supervisor state is offered.
        0xd if subleaf == 1 => {
            r.eax &= !((1 << 1) | (1 << 3));
            r.ecx = 0;
            r.edx = 0;
        }
        // Intel Processor Trace (its output goes to physical addresses): hidden with
        // leaf 7 EBX bit 25.
        0x14 => r = CpuidResult::default(),
        // Extended topology: one thread per core, `vcpus` cores; x2APIC id = vCPU id, so
        // it agrees with leaf 1, the MADT and the x2APIC ID register.
        0xb | 0x1f => {
            r = match subleaf {
                0 => CpuidResult {
                    eax: 0,
                    ebx: 1,
                    ecx: 1 << 8,
                    edx: ctx.vcpu_id,
                },
                1 => CpuidResult {
                    eax: 32 - ctx.vcpus.max(1).next_power_of_two().leading_zeros() - 1,
                    ebx: ctx.vcpus,
                    ecx: (2 << 8) | 1,
                    edx: ctx.vcpu_id,
                },
                n => CpuidResult {
                    eax: 0,
                    ebx: 0,
                    ecx: n & 0xff,
                    edx: ctx.vcpu_id,
                },
            };
        }
        7 if subleaf == 0 => {
            if !ctx.fast_strings {
                r.ebx &= !LEAF7_EBX_ERMS;
                r.edx &= !LEAF7_EDX_FSRM;
            }
            r.ecx &= !(1 << 16); // LA57
            r.ebx &= !(1 << 1); // TSC_ADJUST: the MSR is not emulated
            r.ebx &= !(1 << 25); // Processor Trace
                                 // IBRS/IBPB (26), STIBP (27), L1D_FLUSH (28), SSBD (31): SPEC_CTRL,
                                 // PRED_CMD and FLUSH_CMD are not virtualized (they #GP), so not offered.
            r.edx &= !((1 << 26) | (1 << 27) | (1 << 28) | (1 << 31));
            // OSPKE (ECX 4) reports the guest's own CR4.PKE (22).
            r.ecx = (r.ecx & !(1 << 4)) | (((ctx.cr4 >> 22) & 1) as u32) << 4;
        }
        7 if subleaf == 1 && !ctx.fast_strings => r.eax &= !LEAF7_1_EAX_FAST_SHORT,
        0x8000_0001 => r.ecx &= !(1 << 2), // SVM
        // AMD IBPB (12), IBRS (14), STIBP (15), their "always on"/"preferred" hints
        // (16-18), SSBD (24) and VIRT_SSBD (25): as leaf 7, not offered.
        0x8000_0008 => {
            r.ebx &= !((1 << 12) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 17) | (1 << 18));
            r.ebx &= !((1 << 24) | (1 << 25));
        }
        0x8000_000a | 0x8000_001f => r = CpuidResult::default(), // SVM features, SME/SEV
        _ => {}
    }
    r
}

/// The Xen leaves (base+0 ..= base+5); zeros elsewhere in the hypervisor range.
fn xen_leaf(leaf: u32, subleaf: u32, ctx: &CpuidContext) -> CpuidResult {
    let sig = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match leaf {
        XEN_CPUID_BASE => CpuidResult {
            eax: XEN_CPUID_MAX,
            ebx: sig(b"XenV"),
            ecx: sig(b"MMXe"),
            edx: sig(b"nVMM"),
        },
        0x4000_0001 => CpuidResult {
            eax: (XEN_VERSION.0 << 16) | XEN_VERSION.1,
            ..Default::default()
        },
        0x4000_0002 => CpuidResult {
            eax: 1,
            ebx: HYPERCALL_PAGE_MSR,
            ecx: 0,
            edx: 0,
        },
        0x4000_0003 => {
            let _ = subleaf; // time leaf: Linux does not use it
            CpuidResult::default()
        }
        0x4000_0004 => CpuidResult {
            eax: XEN_HVM_CPUID_VCPU_ID_PRESENT
                | XEN_HVM_CPUID_DOMID_PRESENT
                | XEN_HVM_CPUID_UPCALL_VECTOR,
            ebx: ctx.vcpu_id,
            ecx: u32::from(ctx.domid),
            edx: 0,
        },
        _ => CpuidResult::default(),
    }
}

/// The standard-format XSAVE area size for the state components in `xcr0`: the end of
/// the highest enabled component (SDM Vol. 1 §13.4.3; components 0 and 1 live in the
/// 512-byte legacy area, followed by the 64-byte header). `component(i)` gives the
/// (size, offset) that CPUID 0xD.i reports. Computed here rather than passed through
/// because some CPUs (and emulators) report a size that ignores gaps in the layout.
pub fn xsave_size(xcr0: u64, component: impl Fn(u32) -> (u32, u32)) -> u32 {
    let mut end = 512 + 64;
    for i in 2..63 {
        if xcr0 & (1 << i) != 0 {
            let (size, offset) = component(i);
            end = end.max(offset.saturating_add(size));
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: CpuidContext = CpuidContext {
        vcpu_id: 2,
        domid: 7,
        vcpus: 4,
        cr4: 0,
        fast_strings: true,
    };
    const ALL: CpuidResult = CpuidResult {
        eax: !0,
        ebx: !0,
        ecx: !0,
        edx: !0,
    };

    #[test]
    fn xen_signature_and_max_leaf() {
        let r = guest_cpuid(0x4000_0000, 0, ALL, &CTX);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert!(r.eax - 0x4000_0000 >= 2, "Linux requires at least base+2");
    }

    #[test]
    fn version_major_at_least_four() {
        assert!(guest_cpuid(0x4000_0001, 0, ALL, &CTX).eax >> 16 >= 4);
    }

    #[test]
    fn hypercall_page_leaf() {
        assert_eq!(
            guest_cpuid(0x4000_0002, 0, ALL, &CTX),
            CpuidResult {
                eax: 1,
                ebx: 0x4000_0000,
                ecx: 0,
                edx: 0
            }
        );
    }

    #[test]
    fn vcpu_and_domain_ids() {
        let r = guest_cpuid(0x4000_0004, 0, ALL, &CTX);
        assert_eq!(r.eax & (1 << 3 | 1 << 4), 1 << 3 | 1 << 4);
        assert_eq!((r.ebx, r.ecx), (2, 7));
        assert_eq!(r.eax & (1 << 6), 1 << 6, "per-vCPU upcall vectors offered");
    }

    #[test]
    fn other_hypervisor_leaves_are_zero() {
        for leaf in [0x4000_0006, 0x4000_0100, 0x4000_0101, 0x4000_ff00] {
            assert_eq!(
                guest_cpuid(leaf, 0, ALL, &CTX),
                CpuidResult::default(),
                "{leaf:#x}"
            );
        }
    }

    #[test]
    fn leaf1_hides_virtualization_and_sets_hypervisor_bit() {
        let r = guest_cpuid(1, 0, ALL, &CTX);
        assert_eq!(r.ecx & (1 << 5), 0, "VMX");
        assert_eq!(r.ecx & (1 << 6), 0, "SMX");
        assert_eq!(r.ecx & (1 << 3), 0, "MONITOR");
        assert_ne!(r.ecx & (1 << 31), 0, "hypervisor bit");
        assert_ne!(r.ecx & (1 << 21), 0, "x2APIC");
        assert_eq!(
            r.edx & (1 << 7 | 1 << 14),
            0,
            "no machine-check architecture"
        );
        assert_eq!(
            r.edx & 0x0000_1f7f,
            0x0000_1f7f & !(1 << 7),
            "basic EDX features pass through"
        );
        assert_eq!(r.ebx >> 24, 2, "APIC id = vCPU id");
        assert_eq!((r.ebx >> 16) & 0xff, 4);
    }

    #[test]
    fn os_enabled_bits_follow_the_guest_cr4() {
        assert_eq!(
            guest_cpuid(1, 0, ALL, &CTX).ecx & (1 << 27),
            0,
            "guest has not set OSXSAVE"
        );
        let on = CpuidContext {
            cr4: (1 << 18) | (1 << 22),
            ..CTX
        };
        assert_ne!(guest_cpuid(1, 0, ALL, &on).ecx & (1 << 27), 0);
        assert_ne!(guest_cpuid(7, 0, ALL, &on).ecx & (1 << 4), 0);
        assert_eq!(guest_cpuid(7, 0, ALL, &CTX).ecx & (1 << 4), 0);
        assert_eq!(
            guest_cpuid(0xd, 1, ALL, &CTX).eax & (1 << 3),
            0,
            "no XSAVES"
        );
        assert_eq!(
            guest_cpuid(0xd, 1, ALL, &CTX).eax & (1 << 1),
            0,
            "no XSAVEC"
        );
        assert_eq!(
            guest_cpuid(6, 0, ALL, &CTX),
            CpuidResult::default(),
            "no APERF/MPERF"
        );
    }

    #[test]
    fn no_processor_trace_supervisor_state_or_speculation_controls() {
        let l7 = guest_cpuid(7, 0, ALL, &CTX);
        assert_eq!(l7.ebx & (1 << 25), 0, "no Processor Trace");
        assert_eq!(l7.edx & 0x9c00_0000, 0, "no IBRS/IBPB/STIBP/L1D_FLUSH/SSBD");
        assert_eq!(guest_cpuid(0x14, 0, ALL, &CTX), CpuidResult::default());
        let d1 = guest_cpuid(0xd, 1, ALL, &CTX);
        assert_eq!((d1.ecx, d1.edx), (0, 0), "no IA32_XSS components");
        assert_eq!(guest_cpuid(0x8000_0008, 0, ALL, &CTX).ebx & 0x0307_d000, 0);
    }

    #[test]
    fn xsave_size_ends_at_the_highest_component() {
        // Skylake-X layout: AVX 256@576, MPX 64@960 and 64@1024, opmask 64@1088,
        // ZMM_Hi256 512@1152, Hi16_ZMM 1024@1664.
        let layout = |i| match i {
            2 => (256, 576),
            3 => (64, 960),
            4 => (64, 1024),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            _ => (0, 0),
        };
        assert_eq!(xsave_size(0x3, layout), 576);
        assert_eq!(xsave_size(0x7, layout), 832);
        assert_eq!(xsave_size(0xe7, layout), 2688, "the MPX gap still counts");
    }

    #[test]
    fn topology_leaves_agree_with_apic_ids() {
        let smt = guest_cpuid(0xb, 0, ALL, &CTX);
        let core = guest_cpuid(0xb, 1, ALL, &CTX);
        assert_eq!((smt.edx, core.edx), (2, 2), "x2APIC id = vCPU id");
        assert_eq!(core.ebx, 4, "four logical CPUs in the package");
        assert_eq!(core.eax, 2, "two bits of core id");
        assert_eq!((smt.ecx >> 8) & 0xff, 1, "SMT level");
        assert_eq!((core.ecx >> 8) & 0xff, 2, "core level");
        assert_eq!(
            (guest_cpuid(0xb, 2, ALL, &CTX).ecx >> 8) & 0xff,
            0,
            "end of levels"
        );
    }

    #[test]
    fn amd_virtualization_and_memory_encryption_hidden() {
        assert_eq!(guest_cpuid(0x8000_0001, 0, ALL, &CTX).ecx & (1 << 2), 0);
        assert_eq!(
            guest_cpuid(0x8000_000a, 0, ALL, &CTX),
            CpuidResult::default()
        );
        assert_eq!(
            guest_cpuid(0x8000_001f, 0, ALL, &CTX),
            CpuidResult::default()
        );
        assert_eq!(guest_cpuid(7, 0, ALL, &CTX).ecx & (1 << 16), 0, "LA57");
        assert_eq!(guest_cpuid(7, 0, ALL, &CTX).ebx & (1 << 1), 0, "TSC_ADJUST");
        assert_eq!(
            guest_cpuid(7, 1, ALL, &CTX),
            ALL,
            "other subleaves untouched"
        );
    }

    #[test]
    fn fast_string_hints_only_where_rep_movsb_is_fast() {
        let slow = CpuidContext {
            fast_strings: false,
            ..CTX
        };
        let l7 = guest_cpuid(7, 0, ALL, &CTX);
        assert_ne!(l7.ebx & LEAF7_EBX_ERMS, 0, "ERMS kept when fast");
        assert_ne!(l7.edx & LEAF7_EDX_FSRM, 0, "FSRM kept when fast");
        assert_eq!(
            guest_cpuid(7, 1, ALL, &CTX).eax & LEAF7_1_EAX_FAST_SHORT,
            LEAF7_1_EAX_FAST_SHORT
        );
        let l7 = guest_cpuid(7, 0, ALL, &slow);
        assert_eq!(l7.ebx & LEAF7_EBX_ERMS, 0, "ERMS hidden when slow");
        assert_eq!(l7.edx & LEAF7_EDX_FSRM, 0, "FSRM hidden when slow");
        assert_eq!(
            guest_cpuid(7, 1, ALL, &slow).eax & LEAF7_1_EAX_FAST_SHORT,
            0
        );
        // Nothing else in those leaves moves.
        let fast7 = guest_cpuid(7, 0, ALL, &CTX);
        assert_eq!(l7.ebx | LEAF7_EBX_ERMS, fast7.ebx);
        assert_eq!(l7.edx | LEAF7_EDX_FSRM, fast7.edx);
        assert_eq!(l7.ecx, fast7.ecx);
        assert_eq!(
            guest_cpuid(7, 1, ALL, &slow).ebx,
            guest_cpuid(7, 1, ALL, &CTX).ebx
        );
    }

    #[test]
    fn rep_movsb_fast_up_to_half_as_slow_again() {
        assert!(rep_movsb_is_fast(1000, 1000));
        assert!(rep_movsb_is_fast(900, 1000), "faster than movsq");
        assert!(rep_movsb_is_fast(1500, 1000), "the limit");
        assert!(!rep_movsb_is_fast(1501, 1000));
        assert!(!rep_movsb_is_fast(8000, 1000), "QEMU TCG");
        assert!(!rep_movsb_is_fast(u64::MAX, 1), "no overflow");
        assert!(
            !rep_movsb_is_fast(1, 0),
            "movsq took no time: movsb is not faster"
        );
        assert!(rep_movsb_is_fast(0, 0));
    }
}
