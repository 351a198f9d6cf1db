//! `bad-args`: the error codes of event-channel, `vcpu_op` and `sched_op` calls with bad
//! domain ids, ports and vCPU ids, from an **unprivileged** domain with **one vCPU**. Every
//! expected value is Xen 4.17's:
//!
//! * `xen/common/event_channel.c`: `evtchn_alloc_unbound`, `evtchn_status` and
//!   `evtchn_bind_interdomain` look the domain up first (`-ESRCH`); `_evtchn_from_port`
//!   rejects ports beyond the valid range (`-EINVAL`); port 0 is reserved (`-EINVAL` for
//!   send/close/bind, "closed" for status); bind_interdomain wants the remote port unbound
//!   *for this domain* (`-EINVAL`); `evtchn_send` on an unbound port silently drops the
//!   event (0); `evtchn_bind_virq` checks the VIRQ number (`-EINVAL`), then "global VIRQ
//!   on vCPU != 0" (`-EINVAL`), then the vCPU (`-ENOENT`), then "already bound"
//!   (`-EEXIST`); `evtchn_bind_ipi` and `evtchn_bind_vcpu` check the vCPU first
//!   (`-ENOENT`); `bind_vcpu` refuses a per-vCPU VIRQ (`-EINVAL`);
//! * `xen/include/xsm/dummy.h` (`XSM_TARGET`, `XSM_DM_PRIV`): alloc_unbound for, status
//!   of, and remote_shutdown of another domain (or, for remote_shutdown, of itself) are
//!   `-EPERM` unless the caller is the control domain;
//! * `xen/arch/x86/domain.c` `do_vcpu_op`: a vCPU id the domain lacks is `-ENOENT` for every
//!   sub-op (0xffffffff included);
//! * `xen/common/sched/core.c` `SCHEDOP_remote_shutdown`: `rcu_lock_domain_by_id` first
//!   (`-ESRCH`, also for `DOMID_SELF`), then XSM (`-EPERM`).
//! * the same file's `do_poll` (`SCHEDOP_poll`), with interrupts disabled so that no
//!   upcall can end the poll first: an unreadable argument is `-EFAULT`; more than 128
//!   ports `-EINVAL` before the array is looked at; then the ports are read one by one, in
//!   order: an unreadable one is `-EFAULT`, one at or beyond the ABI's range `-EINVAL`, a
//!   pending one ends the poll at once (0, the ports after it unread); no alignment is
//!   required of the array; with no port at all the poll only waits for its timeout.
//!
//! Command line: `[other=<domid>]`. With `other`, the checks that need a second, existing
//! domain run too; the guest first waits (yielding, up to 30 s) until that domain exists
//! and afterwards checks that it still does (else a `-ESRCH` would be misread).
//!
//! Prints `<call>: got <rc> expected <rc>` per check and passes only if all match.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::evtchn;
use guest_rt::hypercall::{describe, hypercall2, sched_remote_shutdown, sched_yield};
use guest_rt::xen_abi::event_channel::EVTCHNSTAT_CLOSED;
use guest_rt::xen_abi::sched::SHUTDOWN_POWEROFF;
use guest_rt::xen_abi::sched::{SchedPoll, SCHEDOP_POLL};
use guest_rt::xen_abi::xen::{DOMID_SELF, HYPERVISOR_SCHED_OP, VIRQ_CONSOLE, VIRQ_TIMER};
use guest_rt::xen_abi::{DomId, Errno};
use guest_rt::{arch, ensure, fail, println, pvclock, vcpu, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// A domain id no test boots.
const NO_SUCH_DOMAIN: DomId = 999;
/// The first port beyond the 2-level ABI.
const PORT_BEYOND: u32 = 4096;
/// A port inside the ABI's range that the guest never allocates.
const PORT_FREE: u32 = 1000;
/// `NR_VIRQS` (xen/include/public/xen.h).
const NR_VIRQS: u32 = 24;

/// A guest-virtual address the runtime's page tables do not map.
const UNMAPPED_GVA: u64 = 0x0000_0100_0000_0000;
/// Xen's limit on `SCHEDOP_poll`'s `nr_ports`.
const POLL_MAX_PORTS: u32 = 128;

/// `SCHEDOP_poll` with `nr_ports` ports at guest-virtual `ports` (any value) and a
/// timeout 50 ms ahead (so a poll that wrongly blocks still ends).
fn poll_raw(ports: u64, nr_ports: u32) -> Result<i64, guest_rt::Fail> {
    let arg = SchedPoll {
        ports: guest_rt::xen_abi::GuestHandle::new(ports),
        nr_ports,
        _pad0: 0,
        timeout: evtchn::now()? + 50_000_000,
    };
    // SAFETY: `arg` lives across the call and poll only reads it and (at most `nr_ports`
    // u32s at) `ports`, which the hypervisor validates: a bad address is an error, not a
    // write.
    Ok(unsafe {
        hypercall2(
            HYPERVISOR_SCHED_OP,
            SCHEDOP_POLL,
            core::ptr::addr_of!(arg) as u64,
        )
    })
}

/// [`poll_raw`] on `ports`.
fn poll_ports(ports: &[u32]) -> Result<i64, guest_rt::Fail> {
    poll_raw(ports.as_ptr() as u64, ports.len() as u32)
}

#[derive(Clone, Copy)]
enum Expect {
    Eq(i64),
    /// A port (a non-negative result).
    Port,
}

const ESRCH: Expect = Expect::Eq(Errno::ESRCH.to_ret());
const EINVAL: Expect = Expect::Eq(Errno::EINVAL.to_ret());
const ENOENT: Expect = Expect::Eq(Errno::ENOENT.to_ret());
const EPERM: Expect = Expect::Eq(Errno::EPERM.to_ret());
const EEXIST: Expect = Expect::Eq(Errno::EEXIST.to_ret());
const OK: Expect = Expect::Eq(0);

struct Checks {
    failures: u32,
    total: u32,
}

impl Checks {
    /// Records one check and returns the value it got.
    fn check(&mut self, name: core::fmt::Arguments<'_>, got: i64, want: Expect) -> i64 {
        self.total += 1;
        let ok = match want {
            Expect::Eq(v) => got == v,
            Expect::Port => got >= 0,
        };
        let mark = if ok { "" } else { "  <-- mismatch" };
        match want {
            Expect::Eq(v) => println!(
                "{name}: got {} expected {}{mark}",
                describe(got),
                describe(v)
            ),
            Expect::Port => println!("{name}: got {} expected a port{mark}", describe(got)),
        }
        if !ok {
            self.failures += 1;
        }
        got
    }
}

macro_rules! check {
    ($c:expr, $got:expr, $want:expr, $($name:tt)*) => {
        $c.check(format_args!($($name)*), $got, $want)
    };
}

/// `EVTCHNOP_status` as one number: 0 or `-errno`.
fn status_rc(dom: DomId, port: u32) -> i64 {
    evtchn::status(dom, port).map_or_else(|rc| rc, |_| 0)
}

/// Whether `dom` exists, as an unprivileged domain can tell: status of its port 0 is
/// `-ESRCH` only for a domain that does not exist.
fn exists(dom: DomId) -> bool {
    status_rc(dom, 0) != Errno::ESRCH.to_ret()
}

fn test_main(si: &StartInfo) -> TestResult {
    let rc = pvclock::map_shared_info();
    ensure!(
        rc == 0,
        "XENMEM_add_to_physmap(shared_info) returned {}",
        describe(rc)
    );
    let me = arch::xen_vcpu_and_domid().map(|(_, d)| d);
    let other = match si.arg("other") {
        None => None,
        Some(v) => match guest_rt::start_info::parse_u64(v) {
            Some(d) if d < 0x7ff0 => Some(d as DomId),
            _ => fail!("other={v}: expected a domain id"),
        },
    };
    println!(
        "bad-args: domain {}, checks against another domain: {}",
        me.map_or(-1, i32::from),
        other.map_or(-1, i32::from)
    );
    let mut c = Checks {
        failures: 0,
        total: 0,
    };

    // Ports to work with: the timer VIRQ, an unbound port for ourselves, one for a domain
    // that does not exist (Xen does not check remote_dom), one to close twice.
    let timer = check!(
        c,
        evtchn::bind_virq(VIRQ_TIMER, 0),
        Expect::Port,
        "bind_virq(VIRQ_TIMER, vcpu 0)"
    );
    let own = check!(
        c,
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Expect::Port,
        "alloc_unbound(self, remote self)"
    );
    let foreign = check!(
        c,
        evtchn::alloc_unbound(DOMID_SELF, NO_SUCH_DOMAIN),
        Expect::Port,
        "alloc_unbound(self, remote {NO_SUCH_DOMAIN})"
    );
    let spare = check!(
        c,
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Expect::Port,
        "alloc_unbound(self, remote self) #2"
    );
    ensure!(
        timer > 0 && own > 0 && foreign > 0 && spare > 0,
        "could not set up the ports the checks need"
    );
    let (timer, own, foreign, spare) = (timer as u32, own as u32, foreign as u32, spare as u32);

    check!(
        c,
        evtchn::alloc_unbound(NO_SUCH_DOMAIN, DOMID_SELF),
        ESRCH,
        "alloc_unbound(domain {NO_SUCH_DOMAIN}, remote self)"
    );

    // bind_interdomain
    check!(
        c,
        evtchn::bind_interdomain(NO_SUCH_DOMAIN, 1),
        ESRCH,
        "bind_interdomain(domain {NO_SUCH_DOMAIN}, port 1)"
    );
    check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, 0),
        EINVAL,
        "bind_interdomain(self, port 0)"
    );
    check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, PORT_BEYOND),
        EINVAL,
        "bind_interdomain(self, port {PORT_BEYOND})"
    );
    check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, timer),
        EINVAL,
        "bind_interdomain(self, VIRQ port {timer})"
    );
    check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, foreign),
        EINVAL,
        "bind_interdomain(self, port {foreign} unbound for domain {NO_SUCH_DOMAIN})"
    );
    let loop_end = check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, own),
        Expect::Port,
        "bind_interdomain(self, port {own} unbound for self)"
    );
    check!(
        c,
        evtchn::bind_interdomain(DOMID_SELF, own),
        EINVAL,
        "bind_interdomain(self, port {own} already bound)"
    );

    // send
    check!(c, evtchn::send(0), EINVAL, "send(port 0)");
    check!(
        c,
        evtchn::send(PORT_BEYOND),
        EINVAL,
        "send(port {PORT_BEYOND})"
    );
    check!(
        c,
        evtchn::send(PORT_FREE),
        EINVAL,
        "send(free port {PORT_FREE})"
    );
    check!(c, evtchn::send(foreign), OK, "send(unbound port {foreign})");

    // close
    check!(c, evtchn::close(0), EINVAL, "close(port 0)");
    check!(
        c,
        evtchn::close(PORT_BEYOND),
        EINVAL,
        "close(port {PORT_BEYOND})"
    );
    check!(
        c,
        evtchn::close(PORT_FREE),
        EINVAL,
        "close(free port {PORT_FREE})"
    );
    check!(c, evtchn::close(foreign), OK, "close(port {foreign})");
    check!(
        c,
        evtchn::close(foreign),
        EINVAL,
        "close(port {foreign}) again"
    );

    // status
    check!(
        c,
        status_rc(DOMID_SELF, PORT_BEYOND),
        EINVAL,
        "status(self, port {PORT_BEYOND})"
    );
    check!(
        c,
        status_rc(NO_SUCH_DOMAIN, 1),
        ESRCH,
        "status(domain {NO_SUCH_DOMAIN}, port 1)"
    );
    let st0 = evtchn::status(DOMID_SELF, 0).map(|s| s.status);
    check!(c, status_rc(DOMID_SELF, 0), OK, "status(self, port 0)");
    ensure!(
        st0 == Ok(EVTCHNSTAT_CLOSED),
        "status(self, port 0) says {st0:?}, expected closed ({EVTCHNSTAT_CLOSED})"
    );

    // bind_virq, bind_ipi, bind_vcpu
    check!(
        c,
        evtchn::bind_virq(VIRQ_TIMER, 1),
        ENOENT,
        "bind_virq(VIRQ_TIMER, vcpu 1)"
    );
    check!(
        c,
        evtchn::bind_virq(VIRQ_TIMER, 4096),
        ENOENT,
        "bind_virq(VIRQ_TIMER, vcpu 4096)"
    );
    check!(
        c,
        evtchn::bind_virq(VIRQ_TIMER, 0),
        EEXIST,
        "bind_virq(VIRQ_TIMER, vcpu 0) again"
    );
    check!(
        c,
        evtchn::bind_virq(NR_VIRQS, 0),
        EINVAL,
        "bind_virq(virq {NR_VIRQS}, vcpu 0)"
    );
    check!(
        c,
        evtchn::bind_virq(VIRQ_CONSOLE, 1),
        EINVAL,
        "bind_virq(global VIRQ_CONSOLE, vcpu 1)"
    );
    check!(c, evtchn::bind_ipi(1), ENOENT, "bind_ipi(vcpu 1)");
    check!(c, evtchn::bind_ipi(4096), ENOENT, "bind_ipi(vcpu 4096)");
    check!(
        c,
        evtchn::bind_vcpu(spare, 1),
        ENOENT,
        "bind_vcpu(port {spare}, vcpu 1)"
    );
    check!(
        c,
        evtchn::bind_vcpu(PORT_BEYOND, 0),
        EINVAL,
        "bind_vcpu(port {PORT_BEYOND}, vcpu 0)"
    );
    check!(
        c,
        evtchn::bind_vcpu(timer, 0),
        EINVAL,
        "bind_vcpu(VIRQ_TIMER port {timer}, vcpu 0)"
    );
    check!(
        c,
        evtchn::bind_vcpu(spare, 0),
        OK,
        "bind_vcpu(port {spare}, vcpu 0)"
    );

    // vcpu_op
    let rs = |v| vcpu::runstate(v).map_or_else(|rc| rc, |_| 0);
    check!(c, rs(0), OK, "vcpu_op(get_runstate_info, vcpu 0)");
    check!(c, rs(1), ENOENT, "vcpu_op(get_runstate_info, vcpu 1)");
    check!(
        c,
        rs(u32::MAX),
        ENOENT,
        "vcpu_op(get_runstate_info, vcpu 0xffffffff)"
    );
    check!(c, vcpu::is_up(0), Expect::Eq(1), "vcpu_op(is_up, vcpu 0)");
    check!(c, vcpu::is_up(1), ENOENT, "vcpu_op(is_up, vcpu 1)");
    check!(
        c,
        vcpu::is_up(u32::MAX),
        ENOENT,
        "vcpu_op(is_up, vcpu 0xffffffff)"
    );
    check!(
        c,
        vcpu::set_singleshot_timer(1, 0, 0),
        ENOENT,
        "vcpu_op(set_singleshot_timer, vcpu 1)"
    );
    check!(
        c,
        vcpu::set_singleshot_timer(u32::MAX, 0, 0),
        ENOENT,
        "vcpu_op(set_singleshot_timer, vcpu 0xffffffff)"
    );

    // sched_op(poll), interrupts off: nothing but a pending port or the timeout ends it.
    arch::cli();
    ensure!(loop_end > 0, "no loopback port for the poll checks");
    let loop_end = loop_end as u32;
    let _ = evtchn::test_and_clear(own);
    check!(
        c,
        // SAFETY: the hypervisor only reads the (unmapped) argument address and fails.
        unsafe { hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_POLL, UNMAPPED_GVA) },
        Expect::Eq(Errno::EFAULT.to_ret()),
        "sched_op(poll, unmapped argument)"
    );
    let pending = [own];
    check!(
        c,
        poll_raw(pending.as_ptr() as u64, POLL_MAX_PORTS + 1)?,
        EINVAL,
        "sched_op(poll, nr_ports {})",
        POLL_MAX_PORTS + 1
    );
    check!(
        c,
        poll_raw(UNMAPPED_GVA, u32::MAX)?,
        EINVAL,
        "sched_op(poll, nr_ports 0xffffffff, unmapped array)"
    );
    check!(
        c,
        poll_raw(UNMAPPED_GVA, 1)?,
        Expect::Eq(Errno::EFAULT.to_ret()),
        "sched_op(poll, 1 port, unmapped array)"
    );
    for bad in [PORT_BEYOND, u32::MAX] {
        check!(
            c,
            poll_ports(&[bad])?,
            EINVAL,
            "sched_op(poll, port {bad:#x})"
        );
    }
    // A valid port that is not pending, then a bad one: the bad one is still seen.
    check!(
        c,
        poll_ports(&[own, PORT_BEYOND])?,
        EINVAL,
        "sched_op(poll, ports [{own} idle, {PORT_BEYOND}])"
    );
    // The same with `own` pending (sent through its loopback peer): the poll ends at `own`.
    check!(
        c,
        evtchn::send(loop_end),
        OK,
        "send(port {loop_end} to {own})"
    );
    ensure!(
        evtchn::is_pending(own),
        "port {own} not pending after the loopback send"
    );
    check!(
        c,
        poll_ports(&[own, PORT_BEYOND])?,
        OK,
        "sched_op(poll, ports [{own} pending, {PORT_BEYOND}])"
    );
    check!(
        c,
        poll_ports(&[PORT_BEYOND, own])?,
        EINVAL,
        "sched_op(poll, ports [{PORT_BEYOND}, {own} pending])"
    );
    // An array at an odd address works as any other.
    let mut bytes = [0u8; 9];
    bytes[1..5].copy_from_slice(&own.to_ne_bytes());
    check!(
        c,
        poll_raw(bytes.as_ptr() as u64 + 1, 1)?,
        OK,
        "sched_op(poll, port {own} pending, array at an odd address)"
    );
    ensure!(
        evtchn::test_and_clear(own),
        "port {own} lost its pending bit"
    );
    // No port (array never read): the poll waits for its timeout, then returns 0.
    let t0 = evtchn::now()?;
    check!(
        c,
        poll_raw(UNMAPPED_GVA, 0)?,
        OK,
        "sched_op(poll, no port, unmapped array, 50 ms timeout)"
    );
    let waited = evtchn::now()?.saturating_sub(t0);
    ensure!(
        waited >= 40_000_000,
        "poll with no port returned after {waited} ns, before its 50 ms timeout"
    );

    // remote_shutdown (not privileged). If the hypervisor wrongly allowed the one on our own
    // id, the domain would end here and the test would miss its PASS line.
    check!(
        c,
        sched_remote_shutdown(NO_SUCH_DOMAIN, SHUTDOWN_POWEROFF),
        ESRCH,
        "sched_op(remote_shutdown, domain {NO_SUCH_DOMAIN})"
    );
    check!(
        c,
        sched_remote_shutdown(DOMID_SELF, SHUTDOWN_POWEROFF),
        ESRCH,
        "sched_op(remote_shutdown, DOMID_SELF)"
    );
    match me {
        Some(me) => {
            check!(
                c,
                sched_remote_shutdown(me, SHUTDOWN_POWEROFF),
                EPERM,
                "sched_op(remote_shutdown, own domain {me})"
            );
        }
        None => fail!("CPUID leaf 0x40000004 gives no domain id"),
    }

    if let Some(other) = other {
        let start = guest_rt::evtchn::now()?;
        while !exists(other) {
            ensure!(
                guest_rt::evtchn::now()? < start + 30_000_000_000,
                "domain {other} did not appear within 30 s"
            );
            sched_yield();
        }
        check!(
            c,
            evtchn::alloc_unbound(other, DOMID_SELF),
            EPERM,
            "alloc_unbound(domain {other}, remote self)"
        );
        check!(
            c,
            status_rc(other, 0),
            EPERM,
            "status(domain {other}, port 0)"
        );
        check!(
            c,
            evtchn::bind_interdomain(other, 0),
            EINVAL,
            "bind_interdomain(domain {other}, port 0)"
        );
        check!(
            c,
            sched_remote_shutdown(other, SHUTDOWN_POWEROFF),
            EPERM,
            "sched_op(remote_shutdown, domain {other})"
        );
        ensure!(
            exists(other),
            "domain {other} ended during the checks: the results above may be -ESRCH for that reason"
        );
    }

    println!(
        "bad-args: {} of {} checks as Xen",
        c.total - c.failures,
        c.total
    );
    if c.failures > 0 {
        fail!("{} result(s) differ from Xen's", c.failures);
    }
    Ok(())
}
