//! Behaving as Xen does where a guest can tell (issue 13), on both backends:
//!
//! * `compat/elf32-x86-64`: the `hello` guest converted by `objcopy -O elf32-x86-64` (an
//!   ELF32 file whose machine is x86-64, as 64-bit kernels are often shipped) boots and
//!   passes its own checks. The conversion is checked before the run, so the test cannot
//!   pass on an ELF64 image.
//! * `compat/dom0-without-features-note`: a kernel with no `SUPPORTED_FEATURES` note, as
//!   module 0, is the control domain (Xen's rule): the guest checks its `SIF_*` flags,
//!   `XENFEAT_dom0` and a control-domain-only hypercall itself.
//! * `compat/mmio-hole`: loads, stores, read-modify-writes and string moves on unbacked
//!   guest-physical addresses below 4 GiB (0xfed00000 among them) read all ones and drop
//!   writes, through the instruction emulator; the guest checks each result itself.
//! * `compat/apic-modes`: the LAPIC starts in xAPIC mode, as Xen starts a PVH vCPU, and is
//!   driven through its MMIO page, then in x2APIC mode, then disabled and re-enabled;
//!   the guest counts the self-IPIs and LAPIC timer interrupts it takes in each mode and
//!   times them by its pvclock.
//! * `compat/fifo-evtchn`: the FIFO event-channel ABI: `init_control` argument errors as
//!   Xen (a bad GFN is `-EINVAL`, not `-ENOSYS`), the switch from 2-level, 2,000 channels on
//!   16 priorities sent with interrupts off and walked by the guest as Linux does: each
//!   event once, in priority order; masked ports and ports beyond the event array.
//! * `compat/balloon`: the guest gives 16 MiB back with `XENMEM_decrease_reservation`,
//!   finds hypercall copies to those pages failing, takes them back with
//!   `XENMEM_populate_physmap` and finds them zeroed (4 KiB and 2 MiB extents), and gets
//!   Xen's answers to bad arguments; it checks every count and reservation itself.
//! * `compat/smp-guest`: a PVH guest with 4 vCPUs (`dom0_max_vcpus=4`, on 2 CPUs) starts
//!   its APs Xen's way (`VCPUOP_initialise` with 64-bit and 32-bit `vcpu_hvm_context`s,
//!   `VCPUOP_up`), checks Xen's error codes for bad contexts, double initialise and unknown
//!   vCPUs, sends event-channel IPIs between its vCPUs (`bind_ipi`, `bind_vcpu`) and takes
//!   the APs down (`VCPUOP_down`, `is_up`); it counts every step itself.
//! * `compat/held-regs`: two vCPUs of one domain on one CPU each take page faults at
//!   their own addresses and set their own DR0-DR3 and DR6; each handler waits until the
//!   other vCPU has run (by yield, then by host preemption) before it reads them and CR2
//!   back. The guest compares every value itself (on VMX the VMCS holds none of them).
//! * `grant/shootdown` (issue 11): domain 2 (2 vCPUs) maps a page of domain 1 fifty times
//!   while its vCPU 1 keeps writing through the same guest-physical address; after each
//!   unmap domain 1 checks that no write issued after the unmap returned reached its page
//!   and that the page stays unchanged, then ends and re-grants it (the dom0 `reaper`
//!   waits for both).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};
use crate::tests_multi::built_copy;
use crate::util;

/// The guest's own verdict, then the hypervisor's clean power-off.
const HELLO_PASSED: &[&str] = &[
    r"^\(d0\) hello from a PVH guest",
    r"^\(d0\) guest hello: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const MMIO_HOLE_PASSED: &[&str] = &[
    r"^\(d0\) mmio-hole: 17 cases passed",
    r"^\(d0\) guest mmio-hole: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const APIC_MODES_PASSED: &[&str] = &[
    r"^\(d0\) apic-modes: boots in xAPIC mode",
    r"^\(d0\) apic-modes: xAPIC self-IPIs by shorthand and by ID taken",
    r"^\(d0\) apic-modes: xAPIC logical IPIs \(flat and cluster\) reach the APICs their MDA selects",
    r"^\(d0\) apic-modes: xAPIC one-shot timer: one interrupt after \d+ ns",
    r"^\(d0\) apic-modes: x2APIC: SELF_IPI taken",
    r"^\(d0\) apic-modes: x2APIC logical IPIs match the derived LDR",
    r"^\(d0\) apic-modes: x2APIC periodic timer: 3 interrupts",
    r"^\(d0\) apic-modes: disabled \(CPUID APIC clear\), re-enabled",
    r"^\(d0\) guest apic-modes: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const FIFO_EVTCHN_PASSED: &[&str] = &[
    r"^\(d0\) fifo-evtchn: 2-level until init_control succeeds; argument errors as Xen",
    r"^\(d0\) fifo-evtchn: init_control and expand_array; the 2-level pending event carried over",
    r"^\(d0\) fifo-evtchn: 2000 events delivered once each in priority order",
    r"^\(d0\) fifo-evtchn: masked events wait for unmask; events beyond the array wait for their page",
    r"^\(d0\) guest fifo-evtchn: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const BALLOON_PASSED: &[&str] = &[
    r"^\(d0\) balloon: 4096 pages given back, copies to them fail: ok",
    r"^\(d0\) balloon: repopulated pages read as zero: ok",
    r"^\(d0\) balloon: 12 cases passed",
    r"^\(d0\) guest balloon: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const SMP_PASSED: &[&str] = &[
    r"^\(d0\) smp-guest: 4 vCPUs, vCPU 0 up, the others down",
    r"^\(d0\) smp-guest: 21 error cases as Xen",
    r"^\(d0\) smp-guest: vCPUs 1\.\.2 started in 64-bit mode by initialise\+up",
    r"^\(d0\) smp-guest: vCPU 3 started in 32-bit protected mode \(paging off\): stored 0x32b00d00, halted",
    r"^\(d0\) smp-guest: IPIs: 20 to each AP by bind_ipi, 20 by a loopback port moved with bind_vcpu, 20 from each AP to vCPU 0; each received once on its vCPU",
    r"^\(d0\) smp-guest: vCPU 1 taken down by vCPU 0 \(is_up 0, counter frozen at \d+\), resumed by up",
    r"^\(d0\) smp-guest: all APs down \(VCPUOP_down of themselves\), is_up 0, counters frozen",
    r"^\(d0\) guest smp-guest: PASS",
    r"^ferrovisor: power off, exit code 0",
];

const NO_FEATURES_PASSED: &[&str] = &[
    r"^\(d0\) control domain: SIF flags, XENFEAT_dom0 and FVCTL_PHYSINFO all agree",
    r"^\(d0\) platform_op: settime64 and settime32 set the wallclock; errors as Xen",
    r"^\(d0\) guest no-features: PASS",
    r"^ferrovisor: power off, exit code 0",
];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `grant/shootdown`: the reaper as dom0, 1 = granter, 2 = mapper with 2 vCPUs, on 2 CPUs.
fn grant_shootdown(prefix: &str, emulator: Emulator, console: &'static str, slow: u64) -> Test {
    let timeout = 60 * slow;
    Test::new(leak(format!("{prefix}/grant/shootdown")), emulator)
        .cmdline(console)
        .cpus(2)
        .timeout_secs(120 * slow)
        .module(ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
            "await=1,2 alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms={} timeout={timeout}",
            1000 * slow
        ))))
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_SHOOTDOWN, "shootdown-a"))
                .args(leak(format!(
                    "domu:name=granter,mem=16M role=granter mapper=2 timeout={timeout}"
                ))),
        )
        .module(
            ModuleSpec::prepared(|| built_copy(&build::GUEST_GRANT_SHOOTDOWN, "shootdown-b"))
                .args(leak(format!(
                    "domu:name=mapper,mem=16M,vcpus=2 role=mapper granter=1 timeout={timeout}"
                ))),
        )
        .expect_group(&[
            r"^\(d0\) reaper: every watched domain is gone",
            r"^\(d0\) guest reaper: PASS$",
        ])
        .expect_group(&[
            r"^\(d1\) grant-shootdown granter: 50 rounds, both writers' values in P while mapped in 50; no write after an unmap returned, P unchanged after each$",
            r"^\(d1\) guest grant-shootdown: PASS$",
        ])
        .expect_group(&[
            r"^\(d2\) grant-shootdown mapper: 50 rounds, vCPU 1 wrote \d+ times while vCPU 0 held the mapping",
            r"^\(d2\) guest grant-shootdown: PASS$",
        ])
        .forbid(&[r"FAIL", r"crashed"])
}

/// `guest-hello` rewritten as ELF32 with machine x86-64.
fn hello_elf32() -> Result<PathBuf> {
    let from = build::output_path(&build::GUEST_HELLO, Profile::Release);
    let name = "guest-hello-elf32";
    let to = util::temp_beside(&util::xtask_dir().join("fixtures").join(name));
    util::create_parent(&to)?;
    let status = Command::new("objcopy")
        .args(["-O", "elf32-x86-64"])
        .arg(&from)
        .arg(&to)
        .status()
        .context("cannot run objcopy")?;
    if !status.success() {
        bail!(
            "objcopy -O elf32-x86-64 {} failed: {status}",
            from.display()
        );
    }
    let bytes = std::fs::read(&to).with_context(|| format!("cannot read {}", to.display()));
    let _ = std::fs::remove_file(&to);
    let bytes = bytes?;
    let (class, machine) = match bytes.get(..20) {
        Some(h) if h.starts_with(b"\x7fELF") => (h[4], u16::from_le_bytes([h[18], h[19]])),
        _ => bail!("objcopy's output for {name} is not an ELF file"),
    };
    if (class, machine) != (1, 62) {
        bail!("{name}: class {class}, machine {machine}; expected ELF32 (1) with x86-64 (62)");
    }
    util::write_fixture(name, &bytes)
}

const HELD_REGS_PASSED: &[&str] = &[
    r"^\(d0\) held-regs: yield: 2 vCPUs x \d+ #PFs on one CPU, the other vCPU ran in \d+ of \d+ handler waits; CR2, DR0-DR3 and DR6 read back as set in all$",
    r"^\(d0\) held-regs: preemption: 2 vCPUs x \d+ #PFs on one CPU, the other vCPU ran in \d+ of \d+ handler waits; CR2, DR0-DR3 and DR6 read back as set in all$",
    r"^\(d0\) guest held-regs: PASS",
    r"^ferrovisor: power off, exit code 0",
];

/// A backend's test prefix, emulator, hypervisor command line and timeout.
type Backend = (&'static str, fn() -> Emulator, &'static str, u64);

pub fn all() -> Vec<Test> {
    let backends: [Backend; 2] = [
        (
            "qemu-tcg",
            || Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 on_idle=poweroff",
            60,
        ),
        (
            "bochs",
            || Emulator::Bochs,
            "console=com1,e9 on_idle=poweroff",
            300,
        ),
    ];
    let mut tests = Vec::new();
    for (prefix, emulator, console, timeout) in backends {
        let name = |t: &str| -> &'static str { Box::leak(format!("{prefix}/compat/{t}").into()) };
        tests.push(
            Test::new(name("elf32-x86-64"), emulator())
                .cmdline(console)
                .module(ModuleSpec::prepared(hello_elf32).args("hello"))
                .expect(HELLO_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("dom0-without-features-note"), emulator())
                .cmdline(console)
                .module(ModuleSpec::built(&build::GUEST_NO_FEATURES).args("no-features"))
                .expect(NO_FEATURES_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("mmio-hole"), emulator())
                .cmdline(console)
                .module(ModuleSpec::built(&build::GUEST_MMIO_HOLE).args("mmio-hole"))
                .expect(MMIO_HOLE_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("apic-modes"), emulator())
                .cmdline(console)
                .module(ModuleSpec::built(&build::GUEST_APIC_MODES).args("apic-modes"))
                .expect(APIC_MODES_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("fifo-evtchn"), emulator())
                .cmdline(console)
                .module(ModuleSpec::built(&build::GUEST_FIFO_EVTCHN).args("fifo-evtchn"))
                .expect(FIFO_EVTCHN_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("balloon"), emulator())
                .cmdline(Box::leak(
                    format!("{console} dom0_mem=64M").into_boxed_str(),
                ))
                .module(ModuleSpec::built(&build::GUEST_BALLOON).args("balloon"))
                .expect(BALLOON_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(
            Test::new(name("smp-guest"), emulator())
                .cmdline(Box::leak(
                    format!("{console} dom0_max_vcpus=4").into_boxed_str(),
                ))
                .module(ModuleSpec::built(&build::GUEST_SMP).args("smp-guest"))
                .cpus(2)
                .expect(SMP_PASSED)
                .timeout_secs(timeout),
        );
        // Two vCPUs on one CPU: the point is that they take turns on it.
        tests.push(
            Test::new(name("held-regs"), emulator())
                .cmdline(Box::leak(
                    format!("{console} dom0_max_vcpus=2").into_boxed_str(),
                ))
                .module(ModuleSpec::built(&build::GUEST_HELD_REGS).args("held-regs"))
                .cpus(1)
                .expect(HELD_REGS_PASSED)
                .timeout_secs(timeout),
        );
        tests.push(grant_shootdown(
            prefix,
            emulator(),
            console,
            if prefix == "bochs" { 5 } else { 1 },
        ));
    }
    tests
}
