//! SMP: the hypervisor starts the CPUs the firmware lists (ACPI MADT), each AP answers a
//! cross-CPU call with its CPUID APIC id and backend state, wakes for an event-check IPI and
//! takes its own LAPIC timer; `maxcpus=` limits them. A real guest runs beside them and must
//! pass its own checks. Every earlier test runs with one CPU, unchanged.
//!
//! QEMU only for now: Debian's Bochs is built with SMP too (`Test::cpus` reaches its
//! `cpu: count=`), but a Bochs AP start has not been made a test yet.

use crate::build;
use crate::image::Loader;
use crate::spec::{Check, Emulator, ModuleSpec, QemuBoot, Test, ValueCheck};
use crate::tests_multi::{
    built_copy, burner_group, leak, line, ratio_within, reaper_group, same_kib,
};

/// The hello guest's own lines: it ran, and passed its checks.
const HELLO: &[&str] = &[
    r"^\(d0\) hello from a PVH guest",
    r"^\(d0\) guest hello: PASS",
    r"^\(I\) nothing to run; powering off",
    r"^ferrovisor: power off, exit code 0",
];

/// What no SMP test may print: a CPU that failed to start, was refused, or failed a check.
const SMP_FORBID: &[&str] = &[
    r"did not start",
    r"refused",
    r"check failed",
    r"no answer to a cross-CPU call",
    r"running on the boot CPU alone",
];

/// Each AP's check line, then the total.
fn online(n: usize, total: &'static str) -> Vec<&'static str> {
    const AP: [&str; 3] = [
        r"^\(I\) CPU 1: APIC id 1 \(x2?APIC\), CPUID features as the boot CPU's, SVM enabled with its own host save area, idle loop answers calls, IPIs and its timer",
        r"^\(I\) CPU 2: APIC id 2 \(x2?APIC\), CPUID features as the boot CPU's, SVM enabled with its own host save area, idle loop answers calls, IPIs and its timer",
        r"^\(I\) CPU 3: APIC id 3 \(x2?APIC\), CPUID features as the boot CPU's, SVM enabled with its own host save area, idle loop answers calls, IPIs and its timer",
    ];
    let mut v = AP[..n - 1].to_vec();
    v.push(total);
    v
}

pub fn all() -> Vec<Test> {
    let hello = || ModuleSpec::built(&build::GUEST_HELLO).args("hello");
    let mut start = vec![
        r"^\(I\) ACPI: RSDP revision \d+ at 0x[0-9a-f]+, root table (XSDT|RSDT) at 0x[0-9a-f]+",
        r"^\(I\) ACPI MADT: 4 enabled CPUs, 0 online-capable",
        r"^\(I\) smp: starting 3 more CPU\(s\)",
    ];
    start.extend(online(
        4,
        r"^\(I\) smp: 4 CPUs online \(4 listed by the firmware and allowed\)",
    ));
    start.extend_from_slice(HELLO);
    let mut limited = vec![
        r"^\(I\) ACPI MADT: 4 enabled CPUs",
        r"^\(I\) 2 CPU\(s\) left offline \(maxcpus=\)",
        r"^\(I\) smp: starting 1 more CPU\(s\)",
    ];
    limited.extend(online(
        2,
        r"^\(I\) smp: 2 CPUs online \(2 listed by the firmware and allowed\)",
    ));
    limited.extend_from_slice(HELLO);
    // GRUB (multiboot2) hands over its copy of the RSDP: the other path to the MADT.
    let mut grub = vec![
        r"^\(I\) ACPI: RSDP revision \d+ from the boot loader, root table (XSDT|RSDT) at 0x[0-9a-f]+",
        r"^\(I\) ACPI MADT: 2 enabled CPUs",
    ];
    grub.extend(online(
        2,
        r"^\(I\) smp: 2 CPUs online \(2 listed by the firmware and allowed\)",
    ));
    grub.extend_from_slice(HELLO);
    // dom0 (the Debian kernel) on the boot CPU while three APs idle: its shell comes up and
    // its own power-off ends the run.
    let mut dom0_smp = vec![r"^\(I\) smp: starting 3 more CPU\(s\)"];
    dom0_smp.extend(online(4, r"^\(I\) smp: 4 CPUs online"));
    let dom0 = crate::tests_dom0::dom0_boot(
        "qemu-tcg/smp/dom0-poweroff",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        crate::tests_dom0::QEMU_TIMEOUT,
    )
    .cpus(4)
    .expect_group(&dom0_smp)
    .send(r"dom0: shell ready", "poweroff -f\n")
    .expect(crate::tests_dom0::POWEROFF_EXPECT)
    .forbid(SMP_FORBID);
    vec![
        // Four CPUs from the BIOS's MADT (QEMU's multiboot1 loader: found by the BIOS-area
        // scan); the hello guest runs on the boot CPU with three APs idle beside it.
        Test::new("qemu-tcg/smp/start", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cpus(4)
            .cmdline("console=com1 on_idle=poweroff")
            .module(hello())
            .expect(&start)
            .forbid(SMP_FORBID)
            .timeout_secs(90),
        // The same on the checked build: debug assertions, overflow checks and the lock-order
        // checks live on the APs too.
        Test::new(
            "qemu-tcg/checked/smp-start",
            Emulator::qemu_tcg(QemuBoot::Kernel),
        )
        .cpus(4)
        .hypervisor(crate::build::Profile::Checked)
        .cmdline("console=com1 on_idle=poweroff")
        .module(hello())
        .expect(&start)
        .forbid(SMP_FORBID)
        .timeout_secs(120),
        // maxcpus=2 on a 4-CPU machine: exactly two start.
        Test::new("qemu-tcg/smp/maxcpus", Emulator::qemu_tcg(QemuBoot::Kernel))
            .cpus(4)
            .cmdline("console=com1 on_idle=poweroff maxcpus=2")
            .module(hello())
            .expect(&limited)
            .forbid(SMP_FORBID)
            .forbid(&[r"^\(I\) CPU 2:", r"^\(I\) CPU 3:"])
            .timeout_secs(90),
        Test::new(
            "qemu-tcg/smp/grub-rsdp",
            Emulator::qemu_tcg(QemuBoot::Iso(Loader::Multiboot2)),
        )
        .cpus(2)
        .cmdline("console=com1 on_idle=poweroff")
        .module(hello())
        .expect(&grub)
        .forbid(SMP_FORBID)
        .timeout_secs(120),
        dom0,
    ]
    .into_iter()
    .chain(scheduling())
    .chain([xl_two_by_two()])
    .collect()
}

/// A line dom0 printed, with or without the `(d0) ` prefix.
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}

/// Creates the example domU with two vCPUs and waits for its shell.
const CREATE_2: &str =
    "n=$(ready); k0=$(kib); xl create /etc/xen/example.cfg vcpus=2; echo CREATE=$?; \
    up && echo UP=yes || echo UP=never\n";

/// In the domU: its CPU count, then one endless busy loop per vCPU, in the background.
const DOMU_BUSY: &str =
    "echo DOMU_NPROC=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo); \
    for i in 1 2; do (while :; do :; done) & done; echo DOMU_BUSY=$((1 + 1))\n";

/// Pins the domU's vCPU 1 to CPU 3, then reads which CPU it is on, once a second, five
/// times (`xl vcpu-list`'s CPU column), and its state (running, with both busy).
const PIN_CHECK: &str = "xl vcpu-pin example 1 3; echo VCPU_PIN=$?; sleep 1; \
    s=; for i in 1 2 3 4 5; do s=$s$(xl vcpu-list example | awk '$3 == 1 { print $4 }'),; sleep 1; done; \
    echo PINNED_CPU=$s; xl vcpu-list example\n";

/// dom0 with two vCPUs and a domU with two vCPUs on four CPUs: both Linux kernels bring
/// up their second vCPU, the domU's busy loops run while dom0 works, `vcpu-pin` moves the
/// domU's vCPU 1 to CPU 3 and it stays there, and `destroy` ends it and gives every
/// KiB of its memory back.
fn xl_two_by_two() -> Test {
    crate::tests_dom0::dom0_boot(
        "qemu-tcg/smp/xl-2x2",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        "console=com1 dom0_mem=512M noreboot on_idle=poweroff dom0_max_vcpus=2",
        600,
    )
    .cpus(4)
    .forbid(SMP_FORBID)
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(
        r"dom0: shell ready",
        "echo NPROC=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo); \
        xl info | awk '/^nr_cpus/ { print \"XL_NR_CPUS=\" $3 }'\n",
    )
    .expect_value(d0!(r"NPROC=(\S*)$"), "2")
    .expect_value(d0!(r"XL_NR_CPUS=(\S*)$"), "4")
    .send(r"XL_NR_CPUS=\d+\r?\n", crate::tests_toolstack::HELPERS)
    .expect(&[d0!(r"HELPERS=42")])
    .send(r"HELPERS=42\r?\n", CREATE_2)
    .expect_value(d0!(r"CREATE=(\d+)$"), "0")
    .expect_value(d0!(r"UP=(\w+)$"), "yes")
    .send(r"UP=\w+\r?\n", "xl console example\n")
    .send(r"domU: shell ready", DOMU_BUSY)
    .expect_value(d0!(r"DOMU_NPROC=(\S*)$"), "2")
    .send(r"DOMU_BUSY=2\r?\n", "\x1d")
    .send(r"dom0# ", PIN_CHECK)
    .expect_value(d0!(r"VCPU_PIN=(\d+)$"), "0")
    .expect_value(d0!(r"PINNED_CPU=(\S*)$"), "3,3,3,3,3,")
    .send(
        r"PINNED_CPU=\S*\r?\n",
        "xl destroy example; echo DESTROY=$?; back DESTROY\n",
    )
    .expect_value(d0!(r"DESTROY=(\d+)$"), "0")
    .expect_text(d0!(r"FREE_KIB_DESTROY=(\d+,\d+)$"), same_kib)
    .send(r"FREE_KIB_DESTROY=\S*\r?\n", "poweroff -f\n")
    .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// Where the cpu-burn window starts (absolute system time) and how long it lasts: later
/// on Bochs, where the domains start later.
fn burn_window(bochs: bool) -> &'static str {
    if bochs {
        "from_ms=6000 secs=5"
    } else {
        "from_ms=3000 secs=5"
    }
}

/// The idle reaper as domain 0: waits for `domains` to end, then powers off.
fn reaper(domains: &str) -> ModuleSpec {
    ModuleSpec::built(&build::GUEST_REAPER).args(leak(format!(
        "await={domains} alive_ms=500 min_ticks=0 after_ticks=0 max_late_ms=500 timeout=300"
    )))
}

/// A cpu-burn domU (the second and later ones from copies of the image) that checks its
/// own share of the window.
fn burner(
    bochs: bool,
    index: usize,
    opts: &str,
    label: &str,
    share: &str,
    tol: &str,
) -> ModuleSpec {
    let window = burn_window(bochs);
    let args = leak(format!(
        "domu:name={label},mem=16M{opts} label={label} {window} expect_share={share} tolerance={tol}"
    ));
    match index {
        0 => ModuleSpec::built(&build::GUEST_CPU_BURN).args(args),
        _ => ModuleSpec::prepared(|| built_copy(&build::GUEST_CPU_BURN, "cpu-burn-b")).args(args),
    }
}

/// Domain 0 the idle reaper, then one cpu-burn domU per `(label, extra domu options,
/// expected share)` (at most two: the second boots from a copy of the image).
fn sched_test(name: &str, cpus: u32, burners: &[(&str, &str, &str)], tol: &str) -> Test {
    sched_test_on(false, name, cpus, burners, tol)
}

/// [`sched_test`] under QEMU TCG (SVM) or Bochs (VMX, where vCPUs moving between CPUs
/// take the VMCLEAR-on-the-old-CPU path).
fn sched_test_on(
    bochs: bool,
    name: &str,
    cpus: u32,
    burners: &[(&str, &str, &str)],
    tol: &str,
) -> Test {
    let ids: Vec<String> = (1..=burners.len()).map(|i| i.to_string()).collect();
    let (prefix, emulator, cmdline, timeout) = if bochs {
        (
            "bochs",
            Emulator::Bochs,
            "console=com1,e9 on_idle=poweroff dom0_mem=32M",
            600,
        )
    } else {
        (
            "qemu-tcg",
            Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 on_idle=poweroff dom0_mem=32M",
            120,
        )
    };
    let mut t = Test::new(leak(format!("{prefix}/smp/{name}")), emulator)
        .cpus(cpus)
        .cmdline(cmdline)
        .module(reaper(&ids.join(",")))
        .forbid(SMP_FORBID)
        .expect_group(&reaper_group())
        .timeout_secs(timeout);
    for (i, (label, opts, share)) in burners.iter().enumerate() {
        t = t
            .module(burner(bochs, i, opts, label, share, tol))
            .expect_group(&burner_group(i as u32 + 1, label, label, share));
    }
    t
}

/// The scheduler across CPUs, measured by the guests themselves (each cpu-burn domU reads
/// its running time from its runstate and checks its share of a common 5 s window).
fn scheduling() -> Vec<Test> {
    let mut weights = sched_test(
        "weights-one-cpu",
        2,
        &[
            ("w256", ",cpus=1,weight=256", "33.3"),
            ("w512", ",cpus=1,weight=512", "66.7"),
        ],
        "5",
    );
    // Both confined to CPU 1 of two: their running times must be 1:2 +- 15 %.
    for (domid, label) in [(1, "w256"), (2, "w512")] {
        weights.values.push(ValueCheck {
            pattern: line(
                domid,
                &format!(r"cpu-burn {label}: running (\d+) ns in window"),
            ),
            check: Check::Text(if domid == 1 {
                smp_ratio::<0>
            } else {
                smp_ratio::<1>
            }),
        });
    }
    vec![
        // Pinned to different CPUs, each gets (nearly) a whole one: 90 % to 101 % (a vCPU
        // alone on its CPU can read a little over 100 %: its runstate and the window are
        // two clock reads apart; the guest itself fails anything over 101 %).
        sched_test(
            "pinned-burners",
            3,
            &[("pin1", ",cpus=1", "95.5"), ("pin2", ",cpus=2", "95.5")],
            "5.5",
        ),
        // Unpinned on three CPUs: the scheduler spreads them, 90 % to 101 % each.
        sched_test(
            "spread-burners",
            3,
            &[("free1", "", "95.5"), ("free2", "", "95.5")],
            "5.5",
        ),
        weights,
        // A 50 % cap holds with another CPU idle beside it.
        sched_test("cap50", 2, &[("cap50", ",cap=50", "50.0")], "5"),
        // VMX with two CPUs: one burner pinned to each, the reaper (domain 0) wherever
        // there is room, so its vCPU moves between the CPUs.
        sched_test_on(
            true,
            "pinned-burners",
            2,
            &[("pin0", ",cpus=0", "90.0"), ("pin1", ",cpus=1", "90.0")],
            "10",
        ),
    ]
}

/// The running times of `weights-one-cpu`'s two burners (0: weight 256, 1: 512); once
/// both are in, 512:256 must be 2.0 +- 0.3.
fn smp_ratio<const HEAVY: usize>(v: &str) -> Result<(), String> {
    static NS: std::sync::Mutex<[Option<u64>; 2]> = std::sync::Mutex::new([None; 2]);
    let ns: u64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    let mut all = NS.lock().map_err(|_| "poisoned".to_string())?;
    all[HEAVY] = Some(ns);
    match *all {
        [Some(light), Some(heavy)] => ratio_within(heavy, light, 2.0, 0.3),
        _ => Ok(()),
    }
}
