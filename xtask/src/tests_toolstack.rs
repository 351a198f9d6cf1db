//! The toolstack interface (fvctl) driven by a test guest acting as dom0: the
//! `toolstack` guest builds domUs from its own image, runs them, destroys them, checks
//! every error path, and checks that the host's free memory returns to the KiB. The
//! children check that fvctl refuses them (`-EPERM`).

use crate::build;
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};
use crate::tests_multi::{built_copy, leak, line, pass, shut_down, starts};

fn toolstack(
    prefix: &str,
    emulator: Emulator,
    cmdline: &'static str,
    cycles: u32,
    timeout: u64,
) -> Test {
    Test::new(leak(format!("{prefix}/toolstack/fvctl-cycles")), emulator)
        .cmdline(cmdline)
        .timeout_secs(timeout)
        .module(ModuleSpec::built(&build::GUEST_TOOLSTACK).args(leak(format!("cycles={cycles} mem_mib=4"))))
        .module(ModuleSpec::prepared(|| built_copy(&build::GUEST_TOOLSTACK, "toolstack-child")))
        .expect_group(&[
            starts(0, "guest-toolstack", None),
            line(0, "toolstack: error paths checked$"),
            line(0, r"toolstack: cycle 1: domain \d+ built, ran its checks, destroyed$"),
            line(
                0,
                &format!(
                    r"toolstack: {cycles} create/run/destroy cycles in \d+ ms \(last domain \d+\); free memory (\d+) KiB, \d+ KiB before$"
                ),
            ),
            pass(0, "toolstack"),
            shut_down(0, "guest-toolstack", "poweroff", 0),
        ])
        .expect_group(&[r"^\(d\d+\) toolstack: child: every fvctl call got -EPERM$", r"^\(d\d+\) guest toolstack: PASS$"])
}

pub fn all() -> Vec<Test> {
    vec![
        toolstack(
            "qemu-tcg",
            Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 dom0_mem=32M",
            100,
            240,
        ),
        toolstack(
            "bochs",
            Emulator::Bochs,
            "console=com1,e9 dom0_mem=32M",
            10,
            600,
        ),
        dom0_xenstored(),
        linux_domu_smoke(),
    ]
}

/// dom0 with its toolstack daemons: xenstored serves dom0's kernel (which finishes its
/// xenbus probe), and the log shows no error.
pub fn dom0_xenstored() -> Test {
    crate::tests_dom0::dom0_boot(
        "qemu-tcg/toolstack/dom0-xenstored",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        crate::tests_dom0::QEMU_TIMEOUT,
    )
    .expect_group(&[r"dom0: toolstack ready: xenstored and xenconsoled running"])
    .send(
        r"dom0: shell ready",
        "cat /var/log/xen/xenstored.log; ls /sys/bus/xen-backend/ && echo XB=ok\n",
    )
    .expect(&[r"XB=ok"])
    .send(r"XB=ok", "poweroff -f\n")
    .expect(crate::tests_dom0::POWEROFF_EXPECT)
}

/// Scratch: `xl create` the example domU and show what happens.
pub fn linux_domu_smoke() -> Test {
    crate::tests_dom0::dom0_boot(
        "qemu-tcg/toolstack/smoke",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        crate::tests_dom0::QEMU_CMDLINE,
        crate::tests_dom0::QEMU_TIMEOUT,
    )
    .send(r"dom0: shell ready", "xl info; xl create /etc/xen/example.cfg; echo CREATE=$?; sleep 20; xl list; cat /var/log/xen/console/*; cat /var/log/xen/*.log; echo SMOKE=done\n")
    .expect(&[r"SMOKE=done"])
    .send(r"SMOKE=done", "poweroff -f\n")
    .expect(crate::tests_dom0::POWEROFF_EXPECT)
}
