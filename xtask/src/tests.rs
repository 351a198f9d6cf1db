//! THE EMULATOR TEST LIST — edit expectations here.
//!
//! Each entry is one boot of the hypervisor; see [`crate::spec`] for the
//! fields. Patterns are regexes (`regex` crate syntax) matched against one
//! console line at a time, `expect` in order. Every test also fails on the
//! default forbid list (`panic`, `PANIC`, `EXCEPTION`, `page fault`,
//! `triple fault`, `FAIL`).

use crate::image::Loader;
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};

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
const BOCHS_VIRT: &str = r"^\(I\) CPU virtualization: VMX=yes EPT=yes unrestricted-guest=yes VPID=yes";

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
pub fn all() -> Vec<Test> {
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
            for p in t.expect.iter().chain(&t.forbid) {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: bad regex {p:?}: {e}", t.name));
            }
            for s in &t.send {
                Regex::new(s.when).unwrap_or_else(|e| panic!("{}: bad regex: {e}", t.name));
            }
        }
    }
}
