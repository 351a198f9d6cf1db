//! THE EMULATOR TEST LIST — edit expectations here.
//!
//! Each entry is one boot of the hypervisor; see [`crate::spec`] for the
//! fields. Patterns are regexes (`regex` crate syntax) matched against one
//! console line at a time, `expect` in order. Every test also fails on the
//! default forbid list (`panic`, `PANIC`, `EXCEPTION`, `page fault`,
//! `triple fault`, `FAIL`).

use crate::build::{self, Artifact};
use crate::image::Loader;
use crate::spec::{Emulator, Exit, ModuleSpec, QemuBoot, Test};

/// Lines every successful boot prints, in order.
const BOOT_EXPECT: &[&str] = &[
    r"^ferrovisor \d+\.\d+\.\d+ \(x86_64\) starting",
    r"^\(I\) CPU: \w+ family",
    r"^\(I\) memory map \(\d+ entries, [1-9]\d* MiB usable\)",
    r"^\(I\)   \[0x0*100000-0x[0-9a-f]+\] usable",
    r#"^\(I\)   module 0: "mod-a\.txt alpha one" at 0x[0-9a-f]+, 31 bytes"#,
    r#"^\(I\)   module 1: "mod-b\.bin beta" at 0x[0-9a-f]+, 5000 bytes"#,
    r"^\(D\) image: text ",
    r"^\(I\) W\^X check: \d+ leaf mappings, \d+ pages checked, 0 writable\+executable: OK",
];

/// The boot expectations with the CPU-virtualization line `virt` in its place (the
/// harness matches expectations in order).
fn boot_expect(virt: &'static str) -> Vec<&'static str> {
    let mut v = BOOT_EXPECT.to_vec();
    v.insert(2, virt);
    v
}

/// The banner line naming what the emulated CPU offers.
const QEMU_VIRT: &str = r"^\(I\) CPU virtualization: VMX=no .*SVM=yes NPT=yes";
const BOCHS_VIRT: &str =
    r"^\(I\) CPU virtualization: VMX=yes EPT=yes unrestricted-guest=yes VPID=yes";

/// A small text module.
fn mod_a() -> ModuleSpec {
    ModuleSpec::fixture("mod-a.txt", || {
        b"ferrovisor test module A\nalpha\n".to_vec()
    })
    .args("alpha one")
}

/// A binary module of 5000 bytes (not a page multiple), every byte value.
fn mod_b() -> ModuleSpec {
    ModuleSpec::fixture("mod-b.bin", || {
        (0..5000u32).map(|i| (i * 7 % 256) as u8).collect()
    })
    .args("beta")
}

/// All emulator tests, in the order they run.
/// One conformance test guest: what the guest and the hypervisor must report.
struct GuestCase {
    artifact: &'static Artifact,
    /// Module command line: `<name> <kernel args>`.
    args: &'static str,
    expect: &'static [&'static str],
    /// Whether the test provokes a line the default forbid list would reject.
    provokes_fault: bool,
}

/// Lines every guest test must end with: the hypervisor survived the domain and powered off.
const SURVIVED: &[&str] = &[
    r"^\(I\) nothing to run; powering off",
    r"^ferrovisor: power off, exit code 0",
];

const GUESTS: &[GuestCase] = &[
    GuestCase {
        artifact: &build::GUEST_XEN_ABI,
        args: "xen-abi",
        expect: &[
            r"^\(d0\) grant table v1: frame 0 mapped at gfn 0x[0-9a-f]+",
            r"^\(d0\) memory_map: \d+ entries, same as start_info",
            r"^\(d0\) shared_info moved from 0x[0-9a-f]+ to 0x[0-9a-f]+; the RAM page at A came back",
            r"^\(d0\) poll on masked port \d+: rc 0, woke after \d+ us",
            r"^\(d0\) guest xen-abi: PASS",
            r"^\(I\) domain 0 \(guest-xen-abi\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    // Timing belongs to `cargo xtask bench`; here only: the line is there and its
    // numbers are positive and below 0.1 s.
    GuestCase {
        artifact: &build::GUEST_BENCH,
        args: "bench",
        expect: &[
            r"^\(d0\) bench: hypercall_ns=[1-9]\d{0,7} cpuid_ns=[1-9]\d{0,7} hypercall_cycles=\d+ cpuid_cycles=\d+ ",
            r"^\(d0\) guest bench: PASS",
            r"^\(I\) domain 0 \(guest-bench\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_HELLO,
        args: "hello",
        expect: &[
            r"^\(I\) domain 0 \(guest-hello\): \d+ MiB, (SVM|VMX) backend, starting",
            r"^\(d0\) hello from a PVH guest",
            r#"^\(d0\) cmdline: "hello""#,
            r"^\(d0\) guest hello: PASS",
            r"^\(I\) domain 0 \(guest-hello\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_CPUID,
        args: "cpuid",
        expect: &[
            r#"^\(d0\) hypervisor signature "XenVMMXenVMM", max leaf 0x40000005"#,
            r"^\(d0\) guest cpuid: PASS",
            r"^\(I\) domain 0 \(guest-cpuid\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_HLT_WAKE,
        args: "hlt-wake",
        expect: &[
            r"^\(d0\) timer \+20 ms: woke after \d+ us",
            r"^\(d0\) guest hlt-wake: PASS",
            r"^\(I\) domain 0 \(guest-hlt-wake\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_NMI,
        args: "nmi",
        expect: &[
            r"^\(d0\) nmi: xAPIC NMI by physical ID taken once with interrupts off",
            r"^\(d0\) nmi: NMI taken before a pending fixed IPI, the IPI once interrupts were on",
            r"^\(d0\) nmi: x2APIC NMI by shorthand taken once",
            r"^\(d0\) nmi: held until IRET: the NMI sent inside the handler arrived after it, none nested",
            r"^\(d0\) guest nmi: PASS",
            r"^\(I\) domain 0 \(guest-nmi\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_UPCALL_VECTOR,
        args: "upcall-vector",
        expect: &[
            r"^\(d0\) cpuid 0x40000004: eax 0x[0-9a-f]+, XEN_HVM_CPUID_UPCALL_VECTOR set",
            r"^\(d0\) set_evtchn_upcall_vector: vector 0xf -> -EINVAL, vcpu 7 -> -ENOENT, vcpu 7 \+ vector 0xf -> -EINVAL",
            r"^\(d0\) upcall on vector 0xe0 after \d+ us, VIRQ_TIMER port \d+ pending, ISR bit set until EOI and clear after",
            r"^\(d0\) edge-triggered: no interrupt in 30 ms with evtchn_upcall_pending left set; after clearing it the next timer interrupted after \d+ us",
            r"^\(d0\) registering 0xe1 with an upcall pending: delivered at once on sti; then 0xe0 \(raised with IF=0\) after its EOI",
            r"^\(d0\) guest upcall-vector: PASS",
            r"^\(I\) domain 0 \(guest-upcall-vector\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_MEM_ISOLATION,
        args: "mem-isolation",
        expect: &[
            r"^\(d0\) about to touch memory outside the domain",
            r"^\(E\) domain 0 crashed: write access to guest-physical 0x140000000 .*outside its memory",
            r"^\(E\)   RIP 0x[0-9a-f]+",
            // The faulting instruction: from AMD decode assists when the CPU has them,
            // else fetched from guest memory (QEMU TCG and Bochs: the fallback).
            r"^\(E\)   instruction bytes at RIP \((captured by the CPU|read from guest memory)\): ([0-9a-f]{2} ?)+$",
            r"^\(I\) domain 0 \(guest-mem-isolation\) crashed",
        ],
        provokes_fault: false,
    },
    GuestCase {
        artifact: &build::GUEST_TRIPLE_FAULT,
        args: "triple-fault",
        expect: &[
            r"^\(d0\) about to triple fault",
            r"^\(E\) domain 0 crashed: triple fault",
            r"^\(E\)   RIP 0x[0-9a-f]+",
            r"^\(I\) domain 0 \(guest-triple-fault\) crashed",
        ],
        provokes_fault: true,
    },
    GuestCase {
        artifact: &build::GUEST_BAD_HYPERCALL,
        args: "bad-hypercall",
        expect: &[
            r"^\(d0\) hypercall 63: got -ENOSYS",
            r"^\(d0\) console_io\(write, 16, outside RAM\): got -EFAULT",
            r"^\(d0\) memory_op\(add_to_physmap, shared_info index 1\): got -EINVAL",
            r"^\(d0\) guest bad-hypercall: PASS",
            r"^\(I\) domain 0 \(guest-bad-hypercall\) shut down: poweroff \(reason 0\)",
        ],
        provokes_fault: false,
    },
];

/// Every guest test on one emulator (and so one backend).
fn guest_tests(
    prefix: &str,
    emulator: fn() -> Emulator,
    console: &'static str,
    timeout: u64,
) -> Vec<Test> {
    GUESTS
        .iter()
        .map(|g| {
            let name = format!("{prefix}/guest-{}", g.args.split(' ').next().unwrap_or(""));
            let mut t = Test::new(Box::leak(name.into_boxed_str()), emulator())
                .cmdline(console)
                .module(ModuleSpec::built(g.artifact).args(g.args))
                .expect(g.expect)
                .expect(SURVIVED)
                // guest-rt never halts with interrupts off (a failed shutdown spins), so a
                // domain that powers off that way did not finish its test.
                .forbid(&[r"all vCPUs halted with interrupts disabled"])
                .timeout_secs(timeout);
            if g.provokes_fault {
                t = t.no_default_forbid().forbid(&[
                    r"panic",
                    r"PANIC",
                    r"EXCEPTION",
                    r"page fault",
                    r"FAIL",
                ]);
            }
            t
        })
        .collect()
}

/// Triple faults in real mode and in 32-bit protected mode (long mode is `guest-triple-fault`):
/// vCPU 1, started by INIT-SIPI, faults with an empty IDT; the domain ends with a report and
/// the hypervisor powers off cleanly.
fn triple_fault_modes() -> Vec<Test> {
    let mut tests = Vec::new();
    for (prefix, emulator, console, timeout) in [
        (
            "qemu-tcg",
            (|| Emulator::qemu_tcg(QemuBoot::Kernel)) as fn() -> Emulator,
            "console=com1 on_idle=poweroff dom0_max_vcpus=2",
            60,
        ),
        (
            "bochs",
            || Emulator::Bochs,
            "console=com1,e9 on_idle=poweroff dom0_max_vcpus=2",
            300,
        ),
    ] {
        for mode in ["real", "prot32"] {
            let name = format!("{prefix}/guest-triple-fault-{mode}");
            let args = format!("triple-fault mode={mode}");
            let said = format!(r"^\(d0\) about to triple fault in {mode} mode on vCPU 1");
            let expect: &'static [&'static str] = Box::leak(
                vec![
                    &*Box::leak(said.into_boxed_str()),
                    r"^\(E\) domain 0 crashed: triple fault",
                    // The report shows the mode it happened in: PE clear, or set without PG.
                    if mode == "real" {
                        r"^\(E\)   CR0 0x60000010 "
                    } else {
                        r"^\(E\)   CR0 0x60000011 "
                    },
                    // ... and the faulting UD2 at CS:IP.
                    r"^\(E\)   instruction bytes at RIP \(.*\): 0f 0b",
                    r"^\(I\) domain 0 \(guest-triple-fault\) crashed",
                ]
                .into_boxed_slice(),
            );
            tests.push(
                Test::new(Box::leak(name.into_boxed_str()), emulator())
                    .cmdline(console)
                    .module(
                        ModuleSpec::built(&build::GUEST_TRIPLE_FAULT)
                            .args(Box::leak(args.into_boxed_str())),
                    )
                    .expect(expect)
                    .expect(SURVIVED)
                    .no_default_forbid()
                    .forbid(&[r"panic", r"PANIC", r"EXCEPTION", r"page fault", r"FAIL"])
                    .timeout_secs(timeout),
            );
        }
    }
    tests
}

pub fn all() -> Vec<Test> {
    let mut tests = base_tests();
    tests.extend(forced_backend_tests());
    tests.extend(fatal_report_tests());
    tests.extend(guest_tests(
        "qemu-tcg",
        || Emulator::qemu_tcg(QemuBoot::Kernel),
        "console=com1 on_idle=poweroff",
        60,
    ));
    tests.extend(guest_tests(
        "bochs",
        || Emulator::Bochs,
        "console=com1,e9 on_idle=poweroff",
        300,
    ));
    tests.extend(triple_fault_modes());
    // dom0 tests first: the first of them fetches the Debian kernel.
    tests.extend(crate::tests_dom0::all());
    tests.extend(crate::tests_multi::all());
    tests.extend(crate::tests_toolstack::all());
    tests.extend(crate::tests_grant::all());
    tests.extend(crate::tests_pvio::all());
    tests.extend(crate::tests_compat::all());
    tests.extend(crate::tests_hostile_hcall::all());
    tests.extend(crate::tests_hostile_cpu::all());
    tests.extend(crate::tests_smp::all());
    tests.extend(crate::tests_pci::all());
    tests.extend(crate::tests_dom0dev::all());
    tests.extend(crate::tests_install::all());
    tests
}

/// Forcing the backend the CPU lacks: a clear refusal, no domain, a clean power-off.
fn forced_backend_tests() -> Vec<Test> {
    vec![
        Test::new(
            "qemu-tcg/hvm-vmx-unavailable",
            Emulator::qemu_tcg(QemuBoot::Kernel),
        )
        .cmdline("console=com1 on_idle=poweroff hvm=vmx")
        .module(ModuleSpec::built(&build::GUEST_HELLO).args("hello"))
        .expect(&[
            r"^\(E\) VMX backend unavailable: CPU does not support VMX; no domain can run",
            r"^ferrovisor: power off, exit code 0",
        ])
        .forbid(&[r"domain 0 .*starting"])
        .timeout_secs(60),
        // More memory than the machine has: a clear error, nothing half-built, clean power-off.
        Test::new("qemu-tcg/domain-memory-too-large", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cmdline("console=com1 on_idle=poweroff dom0_mem=2G")
            .module(ModuleSpec::built(&build::GUEST_HELLO).args("hello"))
            .expect(&[
                r"^\(E\) domain 0 \(guest-hello\): cannot build: guest memory: out of host memory \(2048 MiB requested\)",
                r"^\(I\) nothing to run; powering off",
                r"^ferrovisor: power off, exit code 0",
            ])
            .forbid(&[r"domain 0 .*starting"])
            .timeout_secs(60),
        // RAM from 0 that would reach the MMIO hole (and the LAPIC page): refused, not laid
        // over it.
        Test::new("qemu-tcg/domain-memory-covers-hole", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cmdline("console=com1 on_idle=poweroff dom0_mem=3841M")
            .module(ModuleSpec::built(&build::GUEST_HELLO).args("hello"))
            .expect(&[
                r"^\(E\) domain 0 \(guest-hello\): cannot build: guest memory: 3841 MiB of RAM from address 0 would cover the MMIO hole below 4 GiB \(at most 3840 MiB; RAM above 4 GiB is not supported yet\)",
                r"^\(I\) nothing to run; powering off",
                r"^ferrovisor: power off, exit code 0",
            ])
            .forbid(&[r"domain 0 .*starting"])
            .timeout_secs(60),
        Test::new("bochs/hvm-svm-unavailable", Emulator::Bochs)
            .cmdline("console=com1,e9 on_idle=poweroff hvm=svm")
            .module(ModuleSpec::built(&build::GUEST_HELLO).args("hello"))
            .expect(&[
                r"^\(E\) SVM backend unavailable: CPU does not support SVM; no domain can run",
                r"^ferrovisor: power off, exit code 0",
            ])
            .forbid(&[r"domain 0 .*starting"])
            .timeout_secs(300),
    ]
}

/// The fatal paths, provoked with `selftest=`: each must print its report (what, where,
/// the registers) and stop the machine with a failure code, never hang or reboot.
fn fatal_report_tests() -> Vec<Test> {
    // The report is provoked, so the default list (which matches it) is off; instead each
    // test forbids the reports of the other fatal paths (a different failure than the one
    // provoked, or the report path itself faulting), a reboot, and any domain activity.
    let fatal = |name, which, expect: &'static [&'static str], wrong: &'static [&'static str]| {
        Test::new(name, Emulator::qemu_tcg(QemuBoot::Kernel))
            .cmdline(which)
            .expect(expect)
            .no_default_forbid()
            .forbid(wrong)
            .forbid(&[r"ferrovisor: rebooting", r"triple fault", r"domain \d+"])
            .exit(Exit::Code(1))
            .timeout_secs(60)
    };
    const REGS: &str =
        r"^    RAX 0x[0-9a-f]{16}  RBX 0x[0-9a-f]{16}  RCX 0x[0-9a-f]{16}  RDX 0x[0-9a-f]{16}";
    vec![
        fatal(
            "qemu-tcg/fatal-page-fault",
            "console=com1 on_idle=poweroff selftest=page-fault",
            &[
                r"^\*\*\* HYPERVISOR EXCEPTION 14 \(page fault\), error code 0x2$",
                r"^    RIP 0x[0-9a-f]{16}  CS 0x0008",
                r"^    CR0 0x[0-9a-f]{16}  CR2 0x0000000000000008  CR3",
                REGS,
                r"^ferrovisor: power off, exit code 1",
            ],
            &[
                r"HYPERVISOR PANIC",
                r"double fault",
                r"EXCEPTION (?:[0-9]|1[0-35-9]|[2-9][0-9])",
            ],
        ),
        fatal(
            "qemu-tcg/fatal-panic",
            "console=com1 on_idle=poweroff selftest=panic",
            &[
                r"^\*\*\* HYPERVISOR PANIC at hypervisor/src/start\.rs:\d+:\d+: selftest: deliberate panic$",
                r"^ferrovisor: power off, exit code 1",
            ],
            &[r"EXCEPTION"],
        ),
        // The boot stack's guard page stops the recursion; the double fault runs on its own
        // IST stack, so the report still comes out.
        fatal(
            "qemu-tcg/fatal-stack-overflow",
            "console=com1 on_idle=poweroff selftest=stack-overflow",
            &[
                r"^\*\*\* HYPERVISOR EXCEPTION 8 \(double fault\), error code 0x0$",
                REGS,
                r"^ferrovisor: power off, exit code 1",
            ],
            &[r"HYPERVISOR PANIC", r"EXCEPTION (?:[0-79]|[1-9][0-9])"],
        ),
    ]
}

fn base_tests() -> Vec<Test> {
    vec![
        Test::new("qemu-tcg/boot", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cmdline("loglvl=debug console=com1 on_idle=poweroff")
            .module(mod_a())
            .module(mod_b())
            .expect(&boot_expect(QEMU_VIRT))
            .timeout_secs(60),
        Test::new(
            "qemu-tcg/boot-mb2",
            Emulator::qemu_tcg(QemuBoot::Iso(Loader::Multiboot2)),
        )
        .cmdline("loglvl=debug console=com1 on_idle=poweroff")
        .module(mod_a())
        .module(mod_b())
        .expect(&boot_expect(QEMU_VIRT))
        .timeout_secs(60),
        Test::new("qemu-tcg/bad-option", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cmdline("loglvl=nonsense on_idle=poweroff console=com1")
            .expect(&[
                r"unknown value .*nonsense.*loglvl|unknown value .*loglvl=nonsense|loglvl.*nonsense.*default",
                r"W\^X check: .* OK",
            ])
            // The default level (info) must be in force: no debug lines.
            .forbid(&[r"^\(D\) "])
            .timeout_secs(60),
        // BIOS + GRUB take about 3 s of wall time with the small ISO; the
        // rest is the hypervisor, which Bochs runs much slower than QEMU.
        Test::new("bochs/boot", Emulator::Bochs)
            .cmdline("loglvl=debug console=com1,e9 on_idle=poweroff")
            .module(mod_a())
            .module(mod_b())
            .expect(&boot_expect(BOCHS_VIRT))
            .timeout_secs(300),
    ]
}

#[cfg(test)]
mod check {
    use super::*;
    use regex::Regex;

    #[test]
    fn names_are_unique_and_patterns_compile() {
        let tests = all();
        for (i, t) in tests.iter().enumerate() {
            assert!(
                tests[..i].iter().all(|o| o.name != t.name),
                "duplicate test name {}",
                t.name
            );
            for p in t
                .expect
                .iter()
                .chain(&t.forbid)
                .chain(t.expect_groups.iter().flatten())
            {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: bad regex {p:?}: {e}", t.name));
            }
            for s in &t.send {
                Regex::new(s.when).unwrap_or_else(|e| panic!("{}: bad regex: {e}", t.name));
            }
        }
    }
}
