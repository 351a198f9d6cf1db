//! `no-features`: a kernel image with no `SUPPORTED_FEATURES` note at all (the runtime's
//! default note is left out). Booted as module 0 it must be the control domain, as Xen
//! builds such a kernel as dom0: `hvm_start_info` has `SIF_PRIVILEGED | SIF_INITDOMAIN`,
//! `XENVER_get_features` has `XENFEAT_dom0`, and a control-domain-only hypercall
//! (ferrovisor's toolstack `FVCTL_PHYSINFO`, `-EPERM` for any other domain) succeeds.
//!
//! As the control domain it also sets the wallclock (`platform_op` `XENPF_settime64` and
//! `XENPF_settime32`) and reads it back from its `shared_info`, and checks the errors Xen
//! gives (`-EACCES` for a wrong interface version, `-EINVAL` for `mbz` set, `-ENOSYS` for
//! a command the hypervisor lacks).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, hypercall1};
use guest_rt::pvclock;
use guest_rt::xen_abi::fvctl::{FvCtl, FVCTL_PHYSINFO, HYPERVISOR_FVCTL};
use guest_rt::xen_abi::platform::{
    XENPF_GET_CPUINFO, XENPF_INTERFACE_VERSION, XENPF_SETTIME32, XENPF_SETTIME64,
    XEN_PLATFORM_OP_SIZE,
};
use guest_rt::xen_abi::xen::{HYPERVISOR_PLATFORM_OP, SIF_INITDOMAIN, SIF_PRIVILEGED};
use guest_rt::xen_abi::Errno;
use guest_rt::{ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main, no_features_note);

const NS: u64 = 1_000_000_000;

/// A `struct xen_platform_op`: cmd, interface_version, then the union at byte 8.
#[repr(C, align(8))]
struct PlatformOp([u8; XEN_PLATFORM_OP_SIZE]);

impl PlatformOp {
    fn new(cmd: u32) -> Self {
        let mut op = PlatformOp([0; XEN_PLATFORM_OP_SIZE]);
        op.put(0, &cmd.to_le_bytes());
        op.put(4, &XENPF_INTERFACE_VERSION.to_le_bytes());
        op
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn call(&mut self) -> i64 {
        // SAFETY: `self` is a live 136-byte xen_platform_op the hypervisor only reads.
        unsafe { hypercall1(HYPERVISOR_PLATFORM_OP, self.0.as_mut_ptr() as u64) }
    }
}

fn errno(e: Errno) -> i64 {
    e.to_ret()
}

/// The UTC time the wallclock gives for system time now.
fn utc_now() -> Option<u64> {
    Some(pvclock::wallclock_ns()?.wrapping_add(pvclock::now_ns()?))
}

fn check_settime() -> TestResult {
    ensure!(pvclock::map_shared_info() == 0, "cannot map shared_info");
    // settime64: 2023-11-14 22:13:20.000000123 UTC "now".
    let want = 1_700_000_000 * NS + 123;
    let mut op = PlatformOp::new(XENPF_SETTIME64);
    op.put(8, &1_700_000_000u64.to_le_bytes());
    op.put(16, &123u32.to_le_bytes());
    let now = pvclock::now_ns().unwrap_or(0);
    op.put(24, &now.to_le_bytes());
    let rc = op.call();
    ensure!(rc == 0, "XENPF_settime64 returned {}", describe(rc));
    let got = utc_now().unwrap_or(0);
    ensure!(
        got >= want && got - want < NS,
        "after settime64 the wallclock reads {got} ns, expected {want} + under 1 s"
    );
    // settime32, a second later on the same system-time base.
    let mut op = PlatformOp::new(XENPF_SETTIME32);
    op.put(8, &1_700_000_001u32.to_le_bytes());
    op.put(16, &now.to_le_bytes());
    let rc = op.call();
    ensure!(rc == 0, "XENPF_settime32 returned {}", describe(rc));
    let got = utc_now().unwrap_or(0);
    let want = 1_700_000_001 * NS;
    ensure!(
        got >= want && got - want < NS,
        "after settime32 the wallclock reads {got} ns, expected {want} + under 1 s"
    );
    // Errors, in Xen's order; none of them changes the clock.
    let mut op = PlatformOp::new(XENPF_SETTIME64);
    op.put(4, &0x0300_0000u32.to_le_bytes());
    let rc = op.call();
    ensure!(
        rc == errno(Errno::EACCES),
        "wrong interface version: {}",
        describe(rc)
    );
    let mut op = PlatformOp::new(XENPF_SETTIME64);
    op.put(20, &1u32.to_le_bytes());
    let rc = op.call();
    ensure!(
        rc == errno(Errno::EINVAL),
        "settime64 with mbz set: {}",
        describe(rc)
    );
    let rc = PlatformOp::new(XENPF_GET_CPUINFO).call();
    ensure!(
        rc == errno(Errno::ENOSYS),
        "XENPF_get_cpuinfo: {}",
        describe(rc)
    );
    let got = utc_now().unwrap_or(0);
    ensure!(
        got >= want && got - want < NS,
        "a refused platform_op changed the wallclock to {got} ns"
    );
    println!("platform_op: settime64 and settime32 set the wallclock; errors as Xen");
    Ok(())
}

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
    check_settime()
}
