//! dom0 and the host's PCI devices (issue 14, first step): the Linux dom0 on QEMU TCG
//! with QEMU's `edu` test device added (vendor 0x1234, device 0x11e8; BAR0 is 1 MiB of
//! MMIO whose register 0 reads the identification 0x010000ed, QEMU `hw/misc/edu.c`).
//!
//! Everything asserted is what dom0 itself saw, from its shell:
//! * Linux enumerated the machine's PCI bus through the mediated configuration space:
//!   `/sys/bus/pci/devices/*/{vendor,device}` list the i440FX host bridge (8086:1237),
//!   the PIIX3 (8086:7000) and edu;
//! * dom0 reads edu's identification with busybox `devmem` (an uncached mapping of
//!   `/dev/mem`; Linux's `read()` of `/dev/mem` stops at the end of RAM) at the address its
//!   BAR0 holds (identity-mapped by the hypervisor while memory decoding is on);
//! * dom0 moves BAR0 over host RAM (at 768 MiB: RAM on the 1 GiB machine, beyond dom0's
//!   512 MiB) through sysfs and turns decoding on: the hypervisor refuses the mapping, so
//!   dom0 reads the empty hole's all ones there, neither host memory nor the device;
//! * a move while decoding is on is dropped (the device still answers at its address),
//!   and a move back with decoding off, then on, maps it again.
//!
//! dom0's ACPI tables (the hypervisor's own, `crates/acpi-tables`) name no PCI root
//! bridge yet, so Linux scans bus 0 itself only with `pci=noacpi` on its command line.

use crate::linux;
use crate::spec::{Emulator, Exit, ModuleSpec, QemuBoot, Test};
use crate::tests_dom0::{dom0_boot, QEMU_CMDLINE, QEMU_TIMEOUT};

/// A pattern for a line dom0 printed (optional `(d0) ` prefix), as in `tests_dom0`.
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}

/// dom0's kernel command line: the usual one plus `pci=noacpi` (see the module docs).
pub(crate) const KERNEL_CMDLINE: &str = "console=hvc0 earlyprintk=xen clocksource=xen pci=noacpi";

/// The shell steps: (when, what to type). Values are printed as `NAME=x<value>` so the
/// echo of the typed command (`NAME=x$(...`) cannot match a value pattern.
const SENDS: &[(&str, &str)] = &[
    (
        r"dom0: shell ready",
        "echo PCI_IDS=$(for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor):$(cat $d/device); done | sort | tr '\\n' ' ')\n",
    ),
    (
        r"PCI_IDS=0x[^\n]*\n",
        "E=$(grep -l 0x11e8 /sys/bus/pci/devices/*/device | head -n 1); E=${E%/device}; \
         B=$(head -n 1 $E/resource | cut -d ' ' -f 1); \
         rd() { devmem $1 32 2>/dev/null | tr XA-F xa-f; }; \
         w16() { printf \"$(printf '\\\\%03o\\\\%03o' $(($2 & 255)) $(($2 >> 8 & 255)))\" | dd of=$E/config bs=2 seek=$(($1 / 2)) count=1 conv=notrunc 2>/dev/null; }; \
         w32() { printf \"$(printf '\\\\%03o\\\\%03o\\\\%03o\\\\%03o' $(($2 & 255)) $(($2 >> 8 & 255)) $(($2 >> 16 & 255)) $(($2 >> 24 & 255)))\" | dd of=$E/config bs=4 seek=$(($1 / 4)) count=1 conv=notrunc 2>/dev/null; }; \
         echo EDU_BAR=$B EDU_ID=x$(rd $B)\n",
    ),
    (
        r"EDU_ID=x\w*\r?\n",
        "w32 16 0x31000000; echo STILL=x$(rd $B) BAR_NOW=x$(od -A n -t x4 -j 16 -N 4 $E/config | tr -d ' ')\n",
    ),
    (
        r"BAR_NOW=x\w*\r?\n",
        "w16 4 0; w32 16 0x30000000; w16 4 2; echo OVER_RAM=x$(rd 0x30000000)\n",
    ),
    (
        r"OVER_RAM=x\w*\r?\n",
        "w16 4 0; w32 16 $B; w16 4 2; echo MOVED_BACK=x$(rd $B)\n",
    ),
];

pub fn all() -> Vec<Test> {
    let mut t = dom0_boot(
        "qemu-tcg/pci/dom0-devices",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        QEMU_CMDLINE,
        QEMU_TIMEOUT,
    )
    .qemu_args(&["-device", "edu"]);
    t.modules[0] =
        ModuleSpec::prepared(|| Ok(linux::assets()?.vmlinuz.clone())).args(KERNEL_CMDLINE);
    for (when, text) in SENDS {
        t = t.send(when, text);
    }
    vec![t
        // Linux found the host bridge, the PIIX3 and edu on the bus (sorted by ID).
        .expect(&[d0!(
            r"PCI_IDS=.*0x1234:0x11e8 .*0x8086:0x1237 .*0x8086:0x7000 "
        )])
        // edu's identification register, read by dom0 at its BAR0.
        .expect_value(d0!(r"EDU_BAR=0x[0-9a-f]+ EDU_ID=(x\w*)$"), "x0x010000ed")
        // A move while decoding is on is dropped: the BAR and the device stay.
        .expect_value(d0!(r"STILL=(x\w*) BAR_NOW=x\w*$"), "x0x010000ed")
        // Over host RAM: refused, so dom0 reads the unbacked hole's all ones.
        .expect_value(d0!(r"OVER_RAM=(x\w*)$"), "x0xffffffff")
        // Back at its address, decoding on again: mapped again.
        .expect_value(d0!(r"MOVED_BACK=(x\w*)$"), "x0x010000ed")
        .exit(Exit::WhenExpected)]
}
