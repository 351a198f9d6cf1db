//! A hostile CPU user (issue 12), on both backends: `guest-hostile-cpu` runs VMX and SVM
//! instructions in ring 0 and ring 3, WBINVD/INVD/MONITOR/MWAIT/RDPMC, single-step,
//! ICEBP and #AC, IA32_XSS, XSAVES, XSETBV with broken pairing rules, the speculation
//! MSRs, SWAPGS across exits, TSC_AUX, illegal and legal CR0/CR3/CR4/EFER writes and
//! IA32_DEBUGCTL, and asserts for each the
//! exception (vector, error code) hardware without the feature would raise, or none.
//!
//! The guest judges every case itself and prints `case <name>: PASS|FAIL`, then
//! `<passed>/<total> cases passed`; the test requires every case to pass (the count is
//! pinned, so a case that silently disappears fails it too), the guest's own PASS and the
//! hypervisor's clean power-off (the domain was not ended by any case).

use crate::build;
use crate::spec::{Emulator, ModuleSpec, QemuBoot, Test};

/// Cases the guest runs on each backend (keep in step with the guest): 42 common, 6
/// XSETBV, 4 checks, the control-register and EFER cases (33 under QEMU, 34 under Bochs,
/// which depend on what CPUID offers), 8 DEBUGCTL, 3 exits at the top of the address
/// space, 1 real-mode #GP on vCPU 1 (hence `dom0_max_vcpus=2`); on Intel (Bochs) also ICEBP
/// twice, #AC and XSAVES (QEMU 7.2 TCG models none of the first three correctly itself).
const CASES_SVM: &str = "97";
const CASES_VMX: &str = "102";

/// A backend's test prefix, emulator, hypervisor command line, timeout and case count.
type Backend = (
    &'static str,
    fn() -> Emulator,
    &'static str,
    u64,
    &'static str,
);

pub fn all() -> Vec<Test> {
    let backends: [Backend; 2] = [
        (
            "qemu-tcg",
            || Emulator::qemu_tcg(QemuBoot::Kernel),
            "console=com1 on_idle=poweroff dom0_max_vcpus=2",
            60,
            CASES_SVM,
        ),
        (
            "bochs",
            || Emulator::Bochs,
            "console=com1,e9 on_idle=poweroff dom0_max_vcpus=2",
            600,
            CASES_VMX,
        ),
    ];
    let mut tests = Vec::new();
    for (prefix, emulator, console, timeout, cases) in backends {
        let name: &'static str = Box::leak(format!("{prefix}/hostile/cpu").into());
        let total: &'static str =
            Box::leak(format!(r"^\(d0\) {cases}/{cases} cases passed").into());
        tests.push(
            Test::new(name, emulator())
                .cmdline(console)
                .module(ModuleSpec::built(&build::GUEST_HOSTILE_CPU).args("hostile-cpu"))
                .expect(&[
                    r"^\(d0\) case vmread #UD: PASS",
                    r"^\(d0\) case ring-3 vmread #UD: PASS",
                    r"^\(d0\) case single step #DB: PASS",
                    total,
                    r"^\(d0\) guest hostile-cpu: PASS",
                    r"^ferrovisor: power off, exit code 0",
                ])
                .forbid(&[r"^\(d0\) case .*: FAIL", r"crashed"])
                .timeout_secs(timeout),
        );
    }
    tests
}
