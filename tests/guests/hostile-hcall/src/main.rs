//! `hostile-hcall`: a hostile guest's hypercalls, each a named case that states the result
//! Xen gives and asserts it (`case NAME: expect X got Y: PASS|FAIL`), then a count.
//!
//! `role=attacker victim=D` (default role): bad pointers (unmapped, non-canonical, top of
//! the address space, crossing the end of RAM) for the pointer argument of every
//! hypercall; timers with huge and negative values (Xen's rules); toolstack-owned HVM
//! parameters; `register_vcpu_info` argument checks and event delivery into a registered
//! vcpu_info; `add_to_physmap` errors that change nothing and a bound on the page tables
//! a domain's shared_info moves may cost; attacks on the neighbour `victim`; the console
//! (a forged hypervisor line, a flood that must be rate-limited).
//!
//! `role=victim attacker=D`: keeps checking a 64 KiB pattern in its own memory and its
//! timer events (ticks keep coming, no event on any other port) until domain D is gone,
//! then reports `victim: undisturbed`.
//!
//! `role=nmi-target`: announces `nmi-target: ready`, then does `work_ms` of checked work
//! (while the harness sends NMIs to the machine) and reports it finished.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU8, Ordering};

use guest_rt::hypercall::{describe, hypercall2, hypercall3};
use guest_rt::xen_abi::Errno;
use guest_rt::{evtchn, fail, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

const MEMORY_OP: u64 = 12;
const PLATFORM_OP: u64 = 7;
const XEN_VERSION: u64 = 17;
const CONSOLE_IO: u64 = 18;
const GRANT_TABLE_OP: u64 = 20;
const VCPU_OP: u64 = 24;
const SCHED_OP: u64 = 29;
const EVENT_CHANNEL_OP: u64 = 32;
const HVM_OP: u64 = 34;

const DOMID_SELF: u16 = 0x7ff0;

/// Not mapped by the guest's page tables (the runtime maps the first 4 GiB only).
const UNMAPPED: u64 = 0x0000_0100_0000_0000;
/// Bits 63..47 not all equal: the CPU faults; must not alias address 0.
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
/// The last 8 bytes of the address space: any argument larger than 8 bytes wraps.
const TOP: u64 = 0xFFFF_FFFF_FFFF_FFF8;

fn e(x: Errno) -> i64 {
    x.to_ret()
}

/// A case name built at run time.
struct Name {
    buf: [u8; 96],
    len: usize,
}

impl Name {
    fn new() -> Self {
        Name {
            buf: [0; 96],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Cases {
    run: u32,
    passed: u32,
}

impl Cases {
    /// A case whose hypercall result must be exactly `want`.
    fn eq(&mut self, name: &str, got: i64, want: i64) {
        self.run += 1;
        let ok = got == want;
        if ok {
            self.passed += 1;
        }
        println!(
            "case {name}: expect {} got {}: {}",
            describe(want),
            describe(got),
            if ok { "PASS" } else { "FAIL" }
        );
    }

    /// A case judged by a condition; `want` and `got` describe it.
    fn check(&mut self, name: &str, want: &str, got: core::fmt::Arguments<'_>, ok: bool) {
        self.run += 1;
        if ok {
            self.passed += 1;
        }
        println!(
            "case {name}: expect {want} got {got}: {}",
            if ok { "PASS" } else { "FAIL" }
        );
    }
}

fn test_main(si: &StartInfo) -> TestResult {
    match si.arg("role").unwrap_or("attacker") {
        "attacker" => attacker(si),
        "victim" => victim(si),
        "nmi-target" => nmi_target(si),
        other => fail!("unknown role={other}"),
    }
}

/// One past the highest RAM byte in the memory map below 4 GiB.
fn ram_end(si: &StartInfo) -> u64 {
    si.memmap()
        .filter(|m| m.ty == 1)
        .map(|m| m.addr + m.size)
        .filter(|&end| end <= 1 << 32)
        .max()
        .unwrap_or(0)
}

/// A page of our own memory (for a vcpu_info).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut VCPU_INFO_PAGE: Page = Page([0; 4096]);

/// Waits (interrupts off) until `port` is pending or `limit_ns` passed; the time it took.
fn time_to_fire(port: u32, limit_ns: u64) -> Result<u64, guest_rt::Fail> {
    let t0 = evtchn::now()?;
    loop {
        let now = evtchn::now()?;
        if evtchn::is_pending(port) || now >= t0 + limit_ns {
            return Ok(now - t0);
        }
        guest_rt::hypercall::sched_poll(&[port], now + limit_ns);
    }
}

fn attacker(si: &StartInfo) -> TestResult {
    let victim = si.arg_u64("victim", 0)? as u16;
    let end = ram_end(si);
    if end < 0x20_0000 {
        fail!("no RAM end found in the memory map");
    }
    // An argument that starts 2 bytes before the end of RAM and crosses into non-RAM
    // (every argument structure is at least 4 bytes).
    let crossing = end - 2;
    let marker: u64 = 0x5aa5_1234_8765_a55a;
    // SAFETY: the last 8 bytes of our RAM are not used by the runtime (the image, its
    // stack and the start info are at the bottom of RAM).
    unsafe { core::ptr::write_volatile((end - 8) as *mut u64, marker) };
    let timer = evtchn::init_with_timer()?;
    guest_rt::arch::cli();
    let mut c = Cases { run: 0, passed: 0 };
    let efault = e(Errno::EFAULT);

    // --- Bad pointers: every hypercall's pointer argument, four kinds each. ---
    let kinds: [(&str, u64); 4] = [
        ("unmapped", UNMAPPED),
        ("non-canonical", NON_CANONICAL),
        ("top-of-address-space", TOP),
        ("crossing-end-of-RAM", crossing),
    ];
    // (name, hypercall, arguments, which argument is the pointer).
    let calls: [(&str, u64, [u64; 3], usize); 24] = [
        ("console_io(write)", CONSOLE_IO, [0, 16, 0], 2),
        ("memory_op(add_to_physmap)", MEMORY_OP, [7, 0, 0], 1),
        ("memory_op(memory_map)", MEMORY_OP, [9, 0, 0], 1),
        ("xen_version(extraversion)", XEN_VERSION, [1, 0, 0], 1),
        ("xen_version(get_features)", XEN_VERSION, [6, 0, 0], 1),
        ("vcpu_op(register_vcpu_info)", VCPU_OP, [10, 0, 0], 2),
        ("vcpu_op(register_runstate_area)", VCPU_OP, [5, 0, 0], 2),
        ("vcpu_op(get_runstate_info)", VCPU_OP, [4, 0, 0], 2),
        ("vcpu_op(set_periodic_timer)", VCPU_OP, [6, 0, 0], 2),
        ("vcpu_op(set_singleshot_timer)", VCPU_OP, [8, 0, 0], 2),
        ("hvm_op(set_param)", HVM_OP, [0, 0, 0], 1),
        ("hvm_op(get_param)", HVM_OP, [1, 0, 0], 1),
        ("hvm_op(set_evtchn_upcall_vector)", HVM_OP, [23, 0, 0], 1),
        ("evtchn_op(bind_virq)", EVENT_CHANNEL_OP, [1, 0, 0], 1),
        ("evtchn_op(send)", EVENT_CHANNEL_OP, [4, 0, 0], 1),
        ("evtchn_op(status)", EVENT_CHANNEL_OP, [5, 0, 0], 1),
        ("evtchn_op(alloc_unbound)", EVENT_CHANNEL_OP, [6, 0, 0], 1),
        ("grant_op(map_grant_ref)", GRANT_TABLE_OP, [0, 0, 1], 1),
        ("grant_op(copy)", GRANT_TABLE_OP, [5, 0, 1], 1),
        ("grant_op(query_size)", GRANT_TABLE_OP, [6, 0, 1], 1),
        ("platform_op", PLATFORM_OP, [0, 0, 0], 0),
        ("sched_op(poll)", SCHED_OP, [3, 0, 0], 1),
        ("sched_op(remote_shutdown)", SCHED_OP, [4, 0, 0], 1),
        // Last: if the pointer were followed, the domain would shut down.
        ("sched_op(shutdown)", SCHED_OP, [2, 0, 0], 1),
    ];
    for (call, nr, args, at) in calls {
        for (kind, ptr) in kinds {
            let mut a = args;
            a[at] = ptr;
            let mut name = Name::new();
            let _ = core::fmt::Write::write_fmt(&mut name, format_args!("{call} {kind}"));
            // SAFETY: the pointer is one of the bad ones above; a hypervisor that behaves
            // like Xen reads and writes nothing through it and returns -EFAULT.
            let rc = unsafe { hypercall3(nr, a[0], a[1], a[2]) };
            c.eq(name.as_str(), rc, efault);
        }
    }
    // SAFETY: our own marker word, read back.
    let after = unsafe { core::ptr::read_volatile((end - 8) as *const u64) };
    c.check(
        "crossing writes nothing",
        "the marker before the end of RAM intact",
        format_args!("{after:#x}"),
        after == marker,
    );

    timers(&mut c, timer)?;
    params(&mut c, victim);
    neighbour(&mut c, victim);
    physmap(&mut c)?;
    vcpu_info(&mut c, timer)?;
    console(&mut c)?;

    println!("hostile-hcall: {}/{} cases passed", c.passed, c.run);
    if c.passed != c.run {
        fail!("{} case(s) failed", c.run - c.passed);
    }
    Ok(())
}

fn vcpu_op<T>(cmd: u64, vcpu: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live structure of the size the sub-op reads or writes.
    unsafe {
        hypercall3(
            VCPU_OP,
            cmd,
            u64::from(vcpu),
            core::ptr::from_mut(arg) as u64,
        )
    }
}

/// Finding 5: guest-chosen timer values, with Xen's rules.
fn timers(c: &mut Cases, timer: u32) -> Result<(), guest_rt::Fail> {
    let ms = 1_000_000u64;
    for (name, period, want) in [
        ("periodic period u64::MAX", u64::MAX, e(Errno::EINVAL)),
        (
            "periodic period 2^63 (negative)",
            1u64 << 63,
            e(Errno::EINVAL),
        ),
        ("periodic period below 1 ms", ms - 1, e(Errno::EINVAL)),
        ("periodic period i64::MAX", i64::MAX as u64, 0),
    ] {
        let mut p = period;
        c.eq(name, vcpu_op(6, 0, &mut p), want);
    }
    c.eq("stop periodic", vcpu_op(7, 0, &mut 0u64), 0);
    // Singleshot: s_time_t comparisons, so 2^63 and above lie in the past.
    let mut t = [u64::MAX, 1];
    c.eq(
        "singleshot u64::MAX with future flag",
        vcpu_op(8, 0, &mut t),
        e(Errno::ETIME),
    );
    evtchn::test_and_clear(timer);
    let mut t = [1u64 << 63, 0];
    c.eq("singleshot 2^63 without flag", vcpu_op(8, 0, &mut t), 0);
    let took = time_to_fire(timer, 2_000 * ms)?;
    c.check(
        "singleshot 2^63 fires at once",
        "< 200 ms",
        format_args!("{} ms", took / ms),
        took < 200 * ms,
    );
    // set_timer_op: a negative or > 2^50 ns ahead timeout fires in 100 ms (Xen).
    for (name, at) in [
        ("set_timer_op u64::MAX", u64::MAX),
        ("set_timer_op now + 2^51", evtchn::now()? + (1 << 51)),
    ] {
        evtchn::test_and_clear(timer);
        c.eq(name, guest_rt::hypercall::set_timer_op(at), 0);
        let took = time_to_fire(timer, 3_000 * ms)?;
        let mut n = Name::new();
        let _ = core::fmt::Write::write_fmt(&mut n, format_args!("{name} fires in ~100 ms"));
        c.check(
            n.as_str(),
            "50..=1000 ms",
            format_args!("{} ms", took / ms),
            (50 * ms..=1000 * ms).contains(&took),
        );
    }
    c.eq(
        "set_timer_op 0 cancels",
        guest_rt::hypercall::set_timer_op(0),
        0,
    );
    evtchn::test_and_clear(timer);
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

fn hvm_param(op: u64, domid: u16, index: u32, value: u64) -> (i64, u64) {
    let mut p = HvmParam {
        domid,
        index,
        value,
        ..Default::default()
    };
    // SAFETY: `p` is a live xen_hvm_param.
    let rc = unsafe { hypercall2(HVM_OP, op, core::ptr::from_mut(&mut p) as u64) };
    (rc, p.value)
}

/// Finding 12: parameters a domain may not set on itself (Xen's hvm_allow_set_param).
fn params(c: &mut Cases, victim: u16) {
    let (_, store_before) = hvm_param(1, DOMID_SELF, 1, 0);
    for (name, index) in [
        ("set_param STORE_PFN on self", 1),
        ("set_param PAE_ENABLED on self", 4),
        ("set_param IDENT_PT on self", 12),
        ("set_param CONSOLE_PFN on self", 17),
        ("set_param TRIPLE_FAULT_REASON on self", 31),
        ("set_param NR_IOREQ_SERVER_PAGES on self", 33),
    ] {
        c.eq(
            name,
            hvm_param(0, DOMID_SELF, index, 0x1234).0,
            e(Errno::EPERM),
        );
    }
    let (rc, store_after) = hvm_param(1, DOMID_SELF, 1, 0);
    c.check(
        "refused set_param changed nothing",
        "STORE_PFN unchanged",
        format_args!("rc {rc}, {store_before:#x} -> {store_after:#x}"),
        rc == 0 && store_after == store_before,
    );
    c.eq(
        "set_param STORE_EVTCHN on self (allowed)",
        hvm_param(0, DOMID_SELF, 2, 0).0,
        0,
    );
    c.eq(
        "set_param index HVM_NR_PARAMS",
        hvm_param(0, DOMID_SELF, 39, 0).0,
        e(Errno::EINVAL),
    );
    c.eq(
        "get_param index u32::MAX",
        hvm_param(1, DOMID_SELF, u32::MAX, 0).0,
        e(Errno::EINVAL),
    );
    c.eq(
        "set_param CALLBACK_IRQ on the victim",
        hvm_param(0, victim, 0, (2 << 56) | 0x20).0,
        e(Errno::EPERM),
    );
    c.eq(
        "get_param STORE_PFN of the victim",
        hvm_param(1, victim, 1, 0).0,
        e(Errno::EPERM),
    );
}

/// Attacks on the neighbour domain: all refused.
fn neighbour(c: &mut Cases, victim: u16) {
    c.eq(
        "alloc_unbound in the victim",
        evtchn::alloc_unbound(victim, DOMID_SELF),
        e(Errno::EPERM),
    );
    c.eq(
        "status of the victim's port 1",
        evtchn::status(victim, 1).err().unwrap_or(0),
        e(Errno::EPERM),
    );
    for port in [1u32, 2, 3] {
        let mut n = Name::new();
        let _ = core::fmt::Write::write_fmt(
            &mut n,
            format_args!("bind_interdomain victim port {port}"),
        );
        c.eq(
            n.as_str(),
            evtchn::bind_interdomain(victim, port),
            e(Errno::EINVAL),
        );
    }
    c.eq(
        "remote_shutdown of the victim",
        guest_rt::hypercall::sched_remote_shutdown(victim, 0),
        e(Errno::EPERM),
    );
    let xatp = guest_rt::xen_abi::memory::XenAddToPhysmap {
        domid: victim,
        size: 0,
        space: guest_rt::xen_abi::memory::XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: 0x300,
    };
    // SAFETY: refused for another domain; nothing is mapped.
    c.eq(
        "add_to_physmap into the victim",
        unsafe { guest_rt::hypercall::add_to_physmap(&xatp) },
        e(Errno::ESRCH),
    );
    for gref in [0u32, 1, 8] {
        let r = guest_rt::grant::map(victim, gref, 0x40_0000, false);
        let mut n = Name::new();
        let _ =
            core::fmt::Write::write_fmt(&mut n, format_args!("map victim's ungranted gref {gref}"));
        c.check(
            n.as_str(),
            "a GNTST error",
            format_args!("{r:?}"),
            matches!(r, Err(s) if s < 0),
        );
    }
}

fn shared_info_to(gpfn: u64) -> i64 {
    let xatp = guest_rt::xen_abi::memory::XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: guest_rt::xen_abi::memory::XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn,
    };
    // SAFETY: moves our shared_info page; the runtime only reads it while it is at
    // `pvclock::shared_info_gpa()`, where it is put back before that.
    unsafe { guest_rt::hypercall::add_to_physmap(&xatp) }
}

/// Finding 12: add_to_physmap errors change nothing; the page tables a domain's overlay
/// moves cost are bounded.
fn physmap(c: &mut Cases) -> Result<(), guest_rt::Fail> {
    let home = pvclock::shared_info_gpa() >> 12;
    c.eq(
        "shared_info to gpfn 2^40",
        shared_info_to(1 << 40),
        e(Errno::EINVAL),
    );
    c.eq(
        "shared_info to gpfn u64::MAX",
        shared_info_to(u64::MAX),
        e(Errno::EINVAL),
    );
    let xatp = guest_rt::xen_abi::memory::XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: guest_rt::xen_abi::memory::XENMAPSPACE_GRANT_TABLE,
        idx: 100_000,
        gpfn: 0x300,
    };
    // SAFETY: refused (no such grant frame); nothing is mapped.
    c.eq(
        "grant frame 100000",
        unsafe { guest_rt::hypercall::add_to_physmap(&xatp) },
        e(Errno::EINVAL),
    );
    let t0 = evtchn::now()?;
    c.check(
        "pvclock readable after refused moves",
        "time advances",
        format_args!("{t0}"),
        t0 > 0,
    );
    // Move shared_info to a fresh 1 GiB region each time: each move costs page tables
    // that the next move must give back, or the host runs out.
    let mut failed = None;
    for i in 1..=300u64 {
        let rc = shared_info_to(i << 18);
        if rc != 0 {
            failed = Some((i, rc));
            break;
        }
    }
    c.check(
        "shared_info moved across 300 GiB regions",
        "every move succeeds",
        format_args!("first failure {failed:?}"),
        failed.is_none(),
    );
    c.eq("shared_info back home", shared_info_to(home), 0);
    let t1 = evtchn::now()?;
    c.check(
        "pvclock works at home again",
        "time advanced",
        format_args!("{t0} -> {t1}"),
        t1 > t0,
    );
    Ok(())
}

/// Finding 12: register_vcpu_info argument checks, and events into the registered area.
fn vcpu_info(c: &mut Cases, timer: u32) -> Result<(), guest_rt::Fail> {
    let page = core::ptr::addr_of_mut!(VCPU_INFO_PAGE) as u64;
    let gfn = page >> 12;
    for (name, mfn, offset, want) in [
        (
            "vcpu_info offset 4033 crosses the page",
            gfn,
            4033u64,
            e(Errno::EINVAL),
        ),
        ("vcpu_info offset 4095", gfn, 4095, e(Errno::EINVAL)),
        (
            "vcpu_info offset u32::MAX",
            gfn,
            u64::from(u32::MAX),
            e(Errno::EINVAL),
        ),
        ("vcpu_info misaligned offset 4", gfn, 4, e(Errno::EINVAL)),
        ("vcpu_info mfn u64::MAX", u64::MAX, 0, e(Errno::EINVAL)),
        ("vcpu_info mfn 2^52 - 1", (1 << 52) - 1, 0, e(Errno::EINVAL)),
        (
            "vcpu_info mfn 2^52 - 1 offset 4032",
            (1 << 52) - 1,
            4032,
            e(Errno::EINVAL),
        ),
    ] {
        let mut r = [mfn, offset];
        c.eq(name, vcpu_op(10, 0, &mut r), want);
    }
    c.eq(
        "vcpu_info of vCPU 1 (none)",
        vcpu_op(10, 1, &mut [gfn, 0u64]),
        e(Errno::ENOENT),
    );
    // A valid registration at the page's last slot, then a second one.
    let mut r = [gfn, 4032u64];
    c.eq("vcpu_info at offset 4032", vcpu_op(10, 0, &mut r), 0);
    let mut r = [gfn, 0u64];
    c.eq(
        "vcpu_info registered twice",
        vcpu_op(10, 0, &mut r),
        e(Errno::EINVAL),
    );
    // Events now flag the new area (a locked OR into guest memory).
    let area = page + 4032;
    // SAFETY: our own page, now vcpu_info; the flag bytes are cleared by us as a guest
    // clears them after an upcall.
    unsafe {
        core::ptr::write_volatile(area as *mut u8, 0);
        core::ptr::write_volatile((area + 8) as *mut u64, 0);
    }
    evtchn::test_and_clear(timer);
    guest_rt::hypercall::set_timer_op(1);
    let t0 = evtchn::now()?;
    while !evtchn::is_pending(timer) && evtchn::now()? < t0 + 500_000_000 {
        guest_rt::hypercall::sched_poll(&[timer], t0 + 500_000_000);
    }
    // SAFETY: as above.
    let (flag, sel) = unsafe {
        (
            core::ptr::read_volatile(area as *const u8),
            core::ptr::read_volatile((area + 8) as *const u64),
        )
    };
    c.check(
        "event flags the registered vcpu_info",
        "upcall_pending 1, selector bit of the timer port",
        format_args!("{flag}, {sel:#x}"),
        flag == 1 && sel & (1 << (timer / 64)) != 0,
    );
    evtchn::test_and_clear(timer);
    Ok(())
}

/// Finding 11: console limits; a line that looks like the hypervisor's.
fn console(c: &mut Cases) -> Result<(), guest_rt::Fail> {
    static BIG: [u8; 1] = [b'x'];
    // SAFETY: rejected on its length before any byte is read.
    let rc = unsafe { hypercall3(CONSOLE_IO, 0, 64 * 1024 + 1, BIG.as_ptr() as u64) };
    c.eq("console write over 64 KiB", rc, e(Errno::EINVAL));
    // Forgery: an unfinished line, then so much text that the rate limit drops some and
    // the hypervisor reports it (its own line), then, once the budget refilled, a line
    // dressed as a hypervisor error. It must come out with the domain prefix; the
    // harness forbids it without.
    guest_rt::console::write_bytes(b"partial ");
    static FILLER: [u8; 20 * 1024] = [b'y'; 20 * 1024];
    // SAFETY: a live 20 KiB buffer, only read.
    let rc = unsafe { hypercall3(CONSOLE_IO, 0, FILLER.len() as u64, FILLER.as_ptr() as u64) };
    c.eq("console write of 20 KiB without newline", rc, 0);
    let now = evtchn::now()?;
    evtchn::sleep_until(now + 2_500_000_000)?;
    guest_rt::arch::cli();
    guest_rt::console::write_bytes(b"(E) forged hypervisor line\n");
    println!(
        "hostile-hcall: {}/{} cases passed before the flood",
        c.passed, c.run
    );
    // A flood of 4 x 64 KiB in numbered 64-byte lines: each call returns 0 (bounded
    // steps with continuations), and the rate limit drops most of it.
    static FLOOD: FloodBuf = FloodBuf::new();
    let buf = FLOOD.fill();
    let t0 = evtchn::now()?;
    let mut rcs = 0;
    for part in 0..4u32 {
        FLOOD.number(part);
        // SAFETY: `buf` is a live 64 KiB buffer.
        let rc = unsafe { hypercall3(CONSOLE_IO, 0, buf.len() as u64, buf.as_ptr() as u64) };
        if rc != 0 {
            rcs += 1;
        }
    }
    let took = evtchn::now()? - t0;
    c.check(
        "flood of 256 KiB",
        "every write returns 0",
        format_args!("{rcs} failed, {} ms", took / 1_000_000),
        rcs == 0,
    );
    // Let the budget refill before the report.
    let now = evtchn::now()?;
    evtchn::sleep_until(now + 4_000_000_000)?;
    guest_rt::arch::cli();
    Ok(())
}

/// 64 KiB of numbered 64-byte lines: `flood NNNNN ...\n`.
struct FloodBuf(core::cell::UnsafeCell<[u8; 65536]>);
// SAFETY: one vCPU; only `attacker` uses it.
unsafe impl Sync for FloodBuf {}

impl FloodBuf {
    const fn new() -> Self {
        FloodBuf(core::cell::UnsafeCell::new([b'.'; 65536]))
    }
    fn fill(&self) -> &[u8] {
        // SAFETY: one vCPU, no other reference is live while this one is.
        let b = unsafe { &mut *self.0.get() };
        for line in b.chunks_mut(64) {
            line[..6].copy_from_slice(b"flood ");
            line[63] = b'\n';
        }
        // SAFETY: as above.
        unsafe { &*self.0.get() }
    }
    fn number(&self, part: u32) {
        // SAFETY: as in `fill`.
        let b = unsafe { &mut *self.0.get() };
        for (i, line) in b.chunks_mut(64).enumerate() {
            let n = part as usize * 1024 + i;
            for (d, slot) in line[6..11].iter_mut().enumerate() {
                *slot = b'0' + ((n / 10usize.pow(4 - d as u32)) % 10) as u8;
            }
        }
    }
}

/// The victim's memory pattern.
static PATTERN: FloodBuf = FloodBuf::new();
static PATTERN_SEED: AtomicU8 = AtomicU8::new(0);

fn pattern_sum() -> u64 {
    // SAFETY: one vCPU; read only.
    let b = unsafe { &*PATTERN.0.get() };
    b.iter()
        .enumerate()
        .fold(0u64, |s, (i, &x)| s.rotate_left(5) ^ (x as u64) ^ i as u64)
}

fn victim(si: &StartInfo) -> TestResult {
    let attacker = si.arg_u64("attacker", 1)? as u16;
    let timeout_ms = si.arg_u64("timeout_ms", 120_000)?;
    let timer = evtchn::init_with_timer()?;
    {
        PATTERN_SEED.store(0x5a, Ordering::Relaxed);
        // SAFETY: one vCPU; the only writer, before any read.
        let b = unsafe { &mut *PATTERN.0.get() };
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(31) ^ 0x5a;
        }
    }
    let sum = pattern_sum();
    let start = evtchn::now()?;
    let mut checks = 0u64;
    let mut ticks = 0u64;
    println!("victim: watching domain {attacker}");
    loop {
        let now = evtchn::now()?;
        if now > start + timeout_ms * 1_000_000 {
            fail!("attacker {attacker} still there after {timeout_ms} ms");
        }
        evtchn::sleep_until(now + 100_000_000)?;
        ticks += u64::from(evtchn::take_count(timer));
        checks += 1;
        if pattern_sum() != sum {
            fail!("victim memory changed (check {checks})");
        }
        let strays: u32 = (0..64u32)
            .filter(|&p| p != timer)
            .map(evtchn::take_count)
            .sum();
        if strays != 0 {
            fail!("{strays} event(s) on ports other than the timer");
        }
        if checks.is_multiple_of(20) {
            println!("victim: {checks} checks ok");
        }
        // The attacker is gone when its id no longer names a domain (-ESRCH).
        if evtchn::status(attacker, 0).err() == Some(Errno::ESRCH.to_ret()) {
            break;
        }
    }
    if ticks < checks {
        fail!("timer ticks {ticks} fewer than wake-ups {checks}");
    }
    println!("victim: undisturbed: {checks} checks, {ticks} timer ticks, memory intact");
    Ok(())
}

fn nmi_target(si: &StartInfo) -> TestResult {
    let work_ms = si.arg_u64("work_ms", 3000)?;
    evtchn::init_with_timer()?;
    println!("nmi-target: ready");
    let start = evtchn::now()?;
    let mut rounds = 0u64;
    let mut acc = 0u64;
    while evtchn::now()? < start + work_ms * 1_000_000 {
        // Work whose result is known: sum of 0..1000 each round.
        let s: u64 = (0..1000u64).map(core::hint::black_box).sum();
        if s != 499_500 {
            fail!("wrong sum {s} in round {rounds}");
        }
        acc = acc.wrapping_add(s);
        rounds += 1;
        if rounds.is_multiple_of(256) {
            evtchn::sleep_until(evtchn::now()? + 1_000_000)?;
        }
    }
    if acc != rounds * 499_500 {
        fail!("accumulated {acc} over {rounds} rounds");
    }
    println!("nmi-target: finished {rounds} rounds of work");
    Ok(())
}
