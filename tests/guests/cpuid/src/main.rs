//! `cpuid`: checks the Xen CPUID leaves (signature, version, hypercall-page leaf) and the
//! feature bits a PVH guest needs (and must not see) at leaves 1 and 0x8000_0001, and that
//! the fast-string hints (ERMS, FSRM) are true: if offered, `rep movsb` copies at least
//! half as fast as `rep movsq` here, as timed by the guest itself.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use guest_rt::arch::{cpuid, rdtsc_ordered, regs_to_str, CpuidResult};
use guest_rt::xen_abi::arch_x86::cpuid::{XEN_CPUID_FIRST_LEAF, XEN_HYPERCALL_PAGE_MSR};
use guest_rt::{ensure, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// CPUID.1:EDX bits every PVH guest relies on.
const LEAF1_EDX_REQUIRED: &[(u32, &str)] = &[
    (0, "FPU"),
    (4, "TSC"),
    (5, "MSR"),
    (6, "PAE"),
    (8, "CX8"),
    (15, "CMOV"),
    (24, "FXSR"),
    (25, "SSE"),
    (26, "SSE2"),
];

/// CPUID.1:ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 31;
/// CPUID.1:ECX bit 5: VMX (must be hidden: no nested virtualisation).
const LEAF1_ECX_VMX: u32 = 5;
/// CPUID.8000_0001:EDX bit 29: long mode.
const EXT1_EDX_LM: u32 = 29;
/// CPUID.8000_0001:EDX bit 20: NX.
const EXT1_EDX_NX: u32 = 20;
/// CPUID.8000_0001:ECX bit 2: SVM (must be hidden).
const EXT1_ECX_SVM: u32 = 2;
/// CPUID.7.0:EBX bit 9: enhanced REP MOVSB/STOSB.
const LEAF7_EBX_ERMS: u32 = 9;
/// CPUID.7.0:EDX bit 4: fast short REP MOVSB.
const LEAF7_EDX_FSRM: u32 = 4;

/// Words copied per timed run (32 KiB).
const COPY_WORDS: usize = 4096;
static mut COPY_SRC: [u64; COPY_WORDS] = [0x5a5a; COPY_WORDS];
static mut COPY_DST: [u64; COPY_WORDS] = [0; COPY_WORDS];

/// TSC cycles of the fastest of five copies of [`COPY_WORDS`] words, with `rep movsb`
/// (`bytes`) or `rep movsq`.
fn copy_cycles(bytes: bool) -> u64 {
    let (src, dst) = (
        core::ptr::addr_of!(COPY_SRC).cast::<u64>(),
        core::ptr::addr_of_mut!(COPY_DST).cast::<u64>(),
    );
    let mut best = u64::MAX;
    for _ in 0..5 {
        let t0 = rdtsc_ordered();
        // SAFETY: copies COPY_WORDS words (8 * COPY_WORDS bytes) between two distinct
        // statics of that size that nothing else touches (this guest has one thread);
        // the direction flag is clear at every Rust call.
        unsafe {
            if bytes {
                asm!("rep movsb", inout("rcx") COPY_WORDS * 8 => _, inout("rsi") src => _,
                    inout("rdi") dst => _, options(nostack, preserves_flags));
            } else {
                asm!("rep movsq", inout("rcx") COPY_WORDS => _, inout("rsi") src => _,
                    inout("rdi") dst => _, options(nostack, preserves_flags));
            }
        }
        best = best.min(rdtsc_ordered().saturating_sub(t0));
    }
    best
}

fn show(leaf: u32, r: &CpuidResult) {
    println!(
        "cpuid {leaf:#010x}: eax {:#010x} ebx {:#010x} ecx {:#010x} edx {:#010x}",
        r.eax, r.ebx, r.ecx, r.edx
    );
}

fn bit(v: u32, n: u32) -> bool {
    v & (1 << n) != 0
}

fn test_main(_si: &StartInfo) -> TestResult {
    let base = XEN_CPUID_FIRST_LEAF;

    let sig = cpuid(base, 0);
    show(base, &sig);
    let text = regs_to_str(sig.ebx, sig.ecx, sig.edx);
    let shown = core::str::from_utf8(&text).unwrap_or("<not ascii>");
    println!("hypervisor signature {shown:?}, max leaf {:#x}", sig.eax);
    if &text != b"XenVMMXenVMM" {
        fail!("leaf {base:#x} signature {shown:?}, expected \"XenVMMXenVMM\"");
    }
    ensure!(
        sig.eax >= base + 2 && sig.eax <= base + 0xff,
        "leaf {base:#x} max leaf {:#x}, expected {:#x}..={:#x}",
        sig.eax,
        base + 2,
        base + 0xff
    );

    let ver = cpuid(base + 1, 0);
    show(base + 1, &ver);
    println!("Xen version {}.{}", ver.eax >> 16, ver.eax & 0xffff);
    ensure!(ver.eax != 0, "leaf {:#x} version is 0", base + 1);

    let hc = cpuid(base + 2, 0);
    show(base + 2, &hc);
    ensure!(
        hc.eax >= 1,
        "leaf {:#x}: {} hypercall pages, expected >= 1",
        base + 2,
        hc.eax
    );
    ensure!(
        hc.ebx == XEN_HYPERCALL_PAGE_MSR,
        "leaf {:#x}: hypercall MSR {:#x}, expected {XEN_HYPERCALL_PAGE_MSR:#x}",
        base + 2,
        hc.ebx
    );

    let l1 = cpuid(1, 0);
    show(1, &l1);
    for &(b, name) in LEAF1_EDX_REQUIRED {
        ensure!(
            bit(l1.edx, b),
            "leaf 1: EDX.{name} (bit {b}) missing, edx {:#010x}",
            l1.edx
        );
    }
    ensure!(
        bit(l1.ecx, LEAF1_ECX_HYPERVISOR),
        "leaf 1: ECX.hypervisor (bit 31) clear, ecx {:#010x}",
        l1.ecx
    );
    ensure!(
        !bit(l1.ecx, LEAF1_ECX_VMX),
        "leaf 1: ECX.VMX (bit 5) exposed to the guest, ecx {:#010x}",
        l1.ecx
    );

    let ext_max = cpuid(0x8000_0000, 0);
    show(0x8000_0000, &ext_max);
    ensure!(
        ext_max.eax >= 0x8000_0001,
        "max extended leaf {:#x}, expected >= 0x80000001",
        ext_max.eax
    );
    let e1 = cpuid(0x8000_0001, 0);
    show(0x8000_0001, &e1);
    ensure!(
        bit(e1.edx, EXT1_EDX_LM),
        "leaf 0x80000001: EDX.LM (bit 29) missing, edx {:#010x}",
        e1.edx
    );
    ensure!(
        bit(e1.edx, EXT1_EDX_NX),
        "leaf 0x80000001: EDX.NX (bit 20) missing, edx {:#010x}",
        e1.edx
    );
    ensure!(
        !bit(e1.ecx, EXT1_ECX_SVM),
        "leaf 0x80000001: ECX.SVM (bit 2) exposed to the guest, ecx {:#010x}",
        e1.ecx
    );

    // The fast-string hints tell the guest to copy with `rep movsb`: they must be true.
    let l7 = cpuid(7, 0);
    show(7, &l7);
    let (erms, fsrm) = (bit(l7.ebx, LEAF7_EBX_ERMS), bit(l7.edx, LEAF7_EDX_FSRM));
    let (movsb, movsq) = (copy_cycles(true), copy_cycles(false));
    println!("32 KiB copy: rep movsb {movsb} cycles, rep movsq {movsq}; ERMS {erms}, FSRM {fsrm}");
    ensure!(
        // SAFETY: the copies are done; nothing else accesses COPY_DST.
        unsafe {
            (*core::ptr::addr_of!(COPY_DST))
                .iter()
                .all(|&w| w == 0x5a5a)
        },
        "the timed copies did not copy"
    );
    ensure!(
        !(erms || fsrm) || movsb <= movsq.saturating_mul(2),
        "fast-string hints offered (ERMS {erms}, FSRM {fsrm}) but rep movsb is {}x slower \
         than rep movsq ({movsb} against {movsq} cycles)",
        movsb / movsq.max(1)
    );
    Ok(())
}
