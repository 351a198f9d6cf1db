//! `no-features`: a kernel image with no `SUPPORTED_FEATURES` note at all (the runtime's
//! default note is left out). Booted as module 0 it must be the control domain, as Xen
//! builds such a kernel as dom0: `hvm_start_info` has `SIF_PRIVILEGED | SIF_INITDOMAIN`,
//! `XENVER_get_features` has `XENFEAT_dom0`, and a control-domain-only hypercall
//! (ferrovisor's toolstack `FVCTL_PHYSINFO`, `-EPERM` for any other domain) succeeds.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, hypercall1};
use guest_rt::xen_abi::fvctl::{FvCtl, FVCTL_PHYSINFO, HYPERVISOR_FVCTL};
use guest_rt::xen_abi::xen::{SIF_INITDOMAIN, SIF_PRIVILEGED};
use guest_rt::{ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main, no_features_note);

fn test_main(si: &StartInfo) -> TestResult {
    let flags = si.raw.flags;
    println!("start_info flags {flags:#x}");
    ensure!(
        flags & (SIF_PRIVILEGED | SIF_INITDOMAIN) == SIF_PRIVILEGED | SIF_INITDOMAIN,
        "start_info flags {flags:#x} lack SIF_PRIVILEGED|SIF_INITDOMAIN"
    );
    ensure!(
        guest_rt::is_control_domain()?,
        "XENVER_get_features has no XENFEAT_dom0"
    );
    let mut op = FvCtl::new(FVCTL_PHYSINFO, 0, &[0u8; 0]);
    // SAFETY: `op` is a live, writable 256-byte FvCtl; PHYSINFO writes only into it.
    let rc = unsafe { hypercall1(HYPERVISOR_FVCTL, &mut op as *mut FvCtl as u64) };
    ensure!(rc == 0, "FVCTL_PHYSINFO returned {}", describe(rc));
    println!("control domain: SIF flags, XENFEAT_dom0 and FVCTL_PHYSINFO all agree");
    Ok(())
}
