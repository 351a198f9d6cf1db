//! `bad-hypercall`: checks the error codes of unknown hypercalls, unknown sub-ops and bad
//! guest pointers, plus one valid call. Values follow Xen (checked against
//! `xen/drivers/char/console.c` `do_console_io`, `xen/common/sched/core.c` `do_sched_op`,
//! `xen/common/event_channel.c` `do_event_channel_op`, `xen/common/memory.c` `do_memory_op`
//! and `xen/arch/x86/x86_64/mm.c` `subarch_memory_op`: each `default:` case is `-ENOSYS`).
//!
//! `memory_op` uses sub-op 63, not e.g. 9999: Xen decodes `cmd & 0x3f` (the higher bits are
//! the continuation extent), and 9999 & 0x3f = 15 is `XENMEM_remove_from_physmap`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, hypercall1, hypercall2, hypercall3, Transport};
use guest_rt::xen_abi::platform::{XENPF_INTERFACE_VERSION, XENPF_SETTIME64};
use guest_rt::xen_abi::sched::SCHEDOP_SHUTDOWN;
use guest_rt::xen_abi::xen::{
    CONSOLEIO_WRITE, HYPERVISOR_CONSOLE_IO, HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_MEMORY_OP,
    HYPERVISOR_PLATFORM_OP, HYPERVISOR_SCHED_OP,
};
use guest_rt::xen_abi::Errno;
use guest_rt::{fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Identity-mapped (the runtime maps the first 4 GiB) but not RAM of a small domain.
const OUTSIDE_RAM: u64 = 0xFFFF_F000;
/// Not mapped by the guest's page tables at all (only the first 4 GiB are).
const UNMAPPED_GVA: u64 = 0x0000_0100_0000_0000;

/// What a check expects.
#[derive(Clone, Copy)]
enum Expect {
    /// Exactly this value.
    Eq(i64),
    /// Any value greater than 0.
    Positive,
}

const ENOSYS: Expect = Expect::Eq(Errno::ENOSYS.to_ret());
const EFAULT: Expect = Expect::Eq(Errno::EFAULT.to_ret());
const EINVAL: Expect = Expect::Eq(Errno::EINVAL.to_ret());

fn check(name: &str, got: i64, expect: Expect, failures: &mut u32) {
    let ok = match expect {
        Expect::Eq(v) => got == v,
        Expect::Positive => got > 0,
    };
    match expect {
        Expect::Eq(v) => println!(
            "{name}: got {} expected {}{}",
            describe(got),
            describe(v),
            if ok { "" } else { "  <-- mismatch" }
        ),
        Expect::Positive => println!(
            "{name}: got {} expected > 0{}",
            describe(got),
            if ok { "" } else { "  <-- mismatch" }
        ),
    }
    if !ok {
        *failures += 1;
    }
}

fn test_main(si: &StartInfo) -> TestResult {
    if guest_rt::hypercall::transport() == Transport::Bare {
        fail!("no Xen hypervisor (bare mode): hypercalls cannot be tested");
    }
    if si.memmap_overlaps(OUTSIDE_RAM, OUTSIDE_RAM + 16) {
        println!("note: {OUTSIDE_RAM:#x} is in the memory map; the outside-RAM pointer checks may not apply");
    }
    let mut failures = 0;

    // SAFETY: (all calls below) the arguments are either plain integers or deliberately bad
    // pointers the hypervisor must reject without touching guest memory; none of the calls
    // can change guest state when the hypervisor behaves like Xen.
    unsafe {
        check("hypercall 63", hypercall1(63, 0), ENOSYS, &mut failures);
        check("hypercall 1000", hypercall1(1000, 0), ENOSYS, &mut failures);
        check(
            "console_io(99)",
            hypercall3(HYPERVISOR_CONSOLE_IO, 99, 0, 0),
            ENOSYS,
            &mut failures,
        );
        check(
            "console_io(write, 16, outside RAM)",
            hypercall3(HYPERVISOR_CONSOLE_IO, CONSOLEIO_WRITE, 16, OUTSIDE_RAM),
            EFAULT,
            &mut failures,
        );
        check(
            "console_io(write, 16, unmapped GVA)",
            hypercall3(HYPERVISOR_CONSOLE_IO, CONSOLEIO_WRITE, 16, UNMAPPED_GVA),
            EFAULT,
            &mut failures,
        );
        check(
            "sched_op(shutdown, outside RAM)",
            hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN, OUTSIDE_RAM),
            EFAULT,
            &mut failures,
        );
        check(
            "sched_op(shutdown, unmapped GVA)",
            hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN, UNMAPPED_GVA),
            EFAULT,
            &mut failures,
        );
        check(
            "sched_op(99)",
            hypercall2(HYPERVISOR_SCHED_OP, 99, 0),
            ENOSYS,
            &mut failures,
        );
        check(
            "memory_op(63)",
            hypercall2(HYPERVISOR_MEMORY_OP, 63, 0),
            ENOSYS,
            &mut failures,
        );
        check(
            "event_channel_op(99)",
            hypercall2(HYPERVISOR_EVENT_CHANNEL_OP, 99, 0),
            ENOSYS,
            &mut failures,
        );
        check(
            "platform_op(outside RAM)",
            hypercall1(HYPERVISOR_PLATFORM_OP, OUTSIDE_RAM),
            EFAULT,
            &mut failures,
        );
    }
    // platform_op is the control domain's: a well-formed XENPF_settime64 from this
    // unprivileged domain is -EPERM (Xen checks the copy, then the interface version,
    // then privilege), and a wrong version -EACCES before that.
    let mut op = [0u64; 17];
    op[0] = u64::from(XENPF_SETTIME64) | (u64::from(XENPF_INTERFACE_VERSION) << 32);
    op[1] = 1_700_000_000;
    // SAFETY: `op` is a live 136-byte xen_platform_op the hypervisor may only read.
    let rc = unsafe { hypercall1(HYPERVISOR_PLATFORM_OP, op.as_mut_ptr() as u64) };
    check(
        "platform_op(settime64) unprivileged",
        rc,
        Expect::Eq(Errno::EPERM.to_ret()),
        &mut failures,
    );
    op[0] = u64::from(XENPF_SETTIME64) | (0x0300_0000u64 << 32);
    // SAFETY: as above.
    let rc = unsafe { hypercall1(HYPERVISOR_PLATFORM_OP, op.as_mut_ptr() as u64) };
    check(
        "platform_op(settime64, wrong version) unprivileged",
        rc,
        Expect::Eq(Errno::EACCES.to_ret()),
        &mut failures,
    );
    // Xen's xenmem_add_to_physmap_one: shared_info has only index 0; any other index
    // leaves the frame invalid and the call fails with -EINVAL (nothing is mapped).
    let bad_index = guest_rt::xen_abi::memory::XenAddToPhysmap {
        domid: guest_rt::xen_abi::xen::DOMID_SELF,
        size: 0,
        space: guest_rt::xen_abi::memory::XENMAPSPACE_SHARED_INFO,
        idx: 1,
        gpfn: 0x200,
    };
    // SAFETY: the hypervisor must reject the request without mapping anything.
    let rc = unsafe { guest_rt::hypercall::add_to_physmap(&bad_index) };
    check(
        "memory_op(add_to_physmap, shared_info index 1)",
        rc,
        EINVAL,
        &mut failures,
    );

    check(
        "xen_version(XENVER_version, NULL)",
        guest_rt::hypercall::xen_version_number(),
        Expect::Positive,
        &mut failures,
    );

    if failures > 0 {
        fail!("{failures} hypercall result(s) differ from Xen's");
    }
    Ok(())
}
