//! `fifo-evtchn`: the FIFO event-channel ABI as Xen 4.17 offers it.
//!
//! 1. While the domain is still 2-level, the FIFO sub-ops fail as Xen's do:
//!    `expand_array` `-EOPNOTSUPP`, `set_priority` `-ENOSYS` (invalid port `-EINVAL`), and
//!    `init_control` checks its arguments: a vCPU the domain lacks `-ENOENT`; a block that
//!    crosses the page or an offset that is not 8-aligned `-EINVAL`; GFNs that are not RAM
//!    of the domain (the MMIO hole, far above RAM, one whose address overflows) `-EINVAL`,
//!    never `-ENOSYS`. An IPI sent afterwards still sets the 2-level pending bit.
//! 2. `init_control` (offset 64 of a page) switches to FIFO (`link_bits` 17); again on the
//!    same vCPU `-EINVAL`. The 2-level pending IPI is carried over and shows up once the
//!    first event-array page is added.
//! 3. 2,000 IPI ports get priorities `i % 16`; with interrupts off they are sent in reverse
//!    order. Exactly one upcall follows (taken when interrupts are enabled), and a walk of
//!    the queues as Linux does (READY bits, HEAD, clearing LINKED, following LINK) must
//!    find every event exactly once, priorities ascending and, within a priority, in the
//!    order they were sent.
//! 4. A masked port stays off the queues until `EVTCHNOP_unmask`; a port beyond the event
//!    array is queued when `expand_array` adds its page.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use guest_rt::evtchn::{self, CALLBACK_VECTOR};
use guest_rt::hypercall::describe;
use guest_rt::xen_abi::event_channel::{
    EvtchnExpandArray, EvtchnInitControl, EvtchnSetPriority, EVTCHNOP_EXPAND_ARRAY,
    EVTCHNOP_INIT_CONTROL, EVTCHNOP_SET_PRIORITY,
};
use guest_rt::{arch, ensure, fail, println, StartInfo, TestResult};

/// Callback-vector interrupts taken so far (the runtime's IDT counts them).
fn upcalls_taken() -> u64 {
    #[cfg(target_os = "none")]
    {
        guest_rt::idt::vector_count(CALLBACK_VECTOR)
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

guest_rt::entry!(test_main);
// Runs as the control domain: Xen's default event-channel limit for a domU is 1023 ports.
guest_rt::dom0_feature_note!();

const EINVAL: i64 = -22;
const ENOENT: i64 = -2;
const ENOSYS: i64 = -38;
const EOPNOTSUPP: i64 = -95;

const PENDING: u32 = 1 << 31;
const MASKED: u32 = 1 << 30;
const LINKED: u32 = 1 << 29;
const LINK: u32 = (1 << 17) - 1;

/// Channels the main phase binds.
const CHANNELS: usize = 2000;
/// Event-array pages (1024 ports each) the guest provides; page 2 is added late.
const PAGES: usize = 3;

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u32; 1024]>);
// SAFETY: one vCPU; the words are only accessed through atomics (the hypervisor too).
unsafe impl Sync for Page {}

static CONTROL: Page = Page(UnsafeCell::new([0; 1024]));
static ARRAY: [Page; PAGES] = [const { Page(UnsafeCell::new([0; 1024])) }; PAGES];
/// Offset of the control block in `CONTROL` (any 8-aligned offset up to 4024 is legal).
const CB_OFF: usize = 64;

fn gfn(p: &Page) -> u64 {
    p.0.get() as u64 >> 12
}

fn page_word(p: &'static Page, i: usize) -> &'static AtomicU32 {
    // SAFETY: `i < 1024` (callers), the page is static and identity-mapped, and AtomicU32
    // has u32's layout.
    unsafe { &*p.0.get().cast::<AtomicU32>().add(i) }
}

/// The event word of `port`.
fn word(port: u32) -> &'static AtomicU32 {
    page_word(&ARRAY[port as usize / 1024], port as usize % 1024)
}

fn ready() -> &'static AtomicU32 {
    page_word(&CONTROL, CB_OFF / 4)
}

fn head(q: u32) -> &'static AtomicU32 {
    page_word(&CONTROL, CB_OFF / 4 + 2 + q as usize)
}

fn upcall_pending() -> &'static AtomicU8 {
    // SAFETY: byte 0 of the mapped shared_info page is vcpu_info[0].evtchn_upcall_pending.
    unsafe { &*(guest_rt::pvclock::shared_info_gpa() as *const AtomicU8) }
}

fn op<T>(cmd: u64, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live structure of the layout `cmd` expects.
    unsafe { evtchn::op(cmd, core::ptr::from_mut(arg) as u64) }
}

fn init_control(vcpu: u32, gfn: u64, offset: u32) -> (i64, u8) {
    let mut a = EvtchnInitControl {
        control_gfn: gfn,
        offset,
        vcpu,
        link_bits: 0,
        _pad: [0; 7],
    };
    let rc = op(EVTCHNOP_INIT_CONTROL, &mut a);
    (rc, a.link_bits)
}

fn expand_array(gfn: u64) -> i64 {
    op(
        EVTCHNOP_EXPAND_ARRAY,
        &mut EvtchnExpandArray { array_gfn: gfn },
    )
}

fn set_priority(port: u32, priority: u32) -> i64 {
    op(
        EVTCHNOP_SET_PRIORITY,
        &mut EvtchnSetPriority { port, priority },
    )
}

fn expect(what: &str, rc: i64, want: i64) -> TestResult {
    ensure!(
        rc == want,
        "{what} returned {}, expected {}",
        describe(rc),
        describe(want)
    );
    Ok(())
}

fn bind_ipi() -> Result<u32, guest_rt::Fail> {
    let p = evtchn::bind_ipi(0);
    ensure!(p > 0, "EVTCHNOP_bind_ipi returned {}", describe(p));
    Ok(p as u32)
}

/// Linux's queue walk: per-queue cached heads, `ready` taken with an exchange, the lowest
/// ready queue first, LINKED cleared (and LINK read) with compare-and-exchange. Calls
/// `f(port, queue)` for each pending, unmasked event (after clearing PENDING). Bounded: a
/// hypervisor that built a cycle would fail the test rather than hang it.
fn drain(heads: &mut [u32; 16], mut f: impl FnMut(u32, u32) -> TestResult) -> TestResult {
    upcall_pending().store(0, Ordering::SeqCst);
    let mut r = ready().swap(0, Ordering::SeqCst);
    let mut steps = 0u32;
    while r != 0 {
        steps += 1;
        ensure!(steps <= 10 * CHANNELS as u32, "queue walk does not end");
        let q = r.trailing_zeros();
        let mut port = heads[q as usize];
        if port == 0 {
            port = head(q).load(Ordering::SeqCst);
        }
        ensure!(
            port != 0 && (port as usize) < PAGES * 1024,
            "queue {q}: head {port} is not a port with an event word"
        );
        let w = word(port);
        let mut old = w.load(Ordering::SeqCst);
        loop {
            match w.compare_exchange(
                old,
                old & !(LINKED | LINK),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        let next = old & LINK;
        if next == 0 {
            r &= !(1 << q);
        }
        let now = w.load(Ordering::SeqCst);
        if now & PENDING != 0 && now & MASKED == 0 {
            w.fetch_and(!PENDING, Ordering::SeqCst);
            f(port, q)?;
        }
        heads[q as usize] = next;
        r |= ready().swap(0, Ordering::SeqCst);
    }
    Ok(())
}

fn test_main(si: &StartInfo) -> TestResult {
    let _ = si;
    let rc = guest_rt::pvclock::map_shared_info();
    ensure!(rc == 0, "mapping shared_info returned {}", describe(rc));
    ensure!(
        guest_rt::is_control_domain()?,
        "not the control domain (the dom0 feature note is missing?)"
    );

    // 1. Still 2-level.
    let first = bind_ipi()?;
    expect(
        "expand_array before init_control",
        expand_array(gfn(&ARRAY[0])),
        EOPNOTSUPP,
    )?;
    expect("set_priority while 2-level", set_priority(first, 3), ENOSYS)?;
    expect(
        "set_priority(port 100000) while 2-level",
        set_priority(100_000, 3),
        EINVAL,
    )?;
    let cb = gfn(&CONTROL);
    expect(
        "init_control(vcpu 1 of 1)",
        init_control(1, cb, 0).0,
        ENOENT,
    )?;
    expect(
        "init_control(offset 4025)",
        init_control(0, cb, 4025).0,
        EINVAL,
    )?;
    expect(
        "init_control(offset 4032)",
        init_control(0, cb, 4032).0,
        EINVAL,
    )?;
    expect("init_control(offset 4)", init_control(0, cb, 4).0, EINVAL)?;
    expect(
        "init_control(offset u32::MAX)",
        init_control(0, cb, u32::MAX).0,
        EINVAL,
    )?;
    expect(
        "init_control(GFN 0xfed00, MMIO hole)",
        init_control(0, 0xfed00, 0).0,
        EINVAL,
    )?;
    expect(
        "init_control(GFN 0x100000, above RAM)",
        init_control(0, 0x10_0000, 0).0,
        EINVAL,
    )?;
    expect(
        "init_control(GFN 2^60)",
        init_control(0, 1 << 60, 0).0,
        EINVAL,
    )?;
    expect(
        "init_control(GFN u64::MAX)",
        init_control(0, u64::MAX, 0).0,
        EINVAL,
    )?;
    expect("EVTCHNOP_send", evtchn::send(first), 0)?;
    ensure!(
        evtchn::is_pending(first),
        "after the failed init_control calls an IPI did not set its 2-level pending bit"
    );
    println!("fifo-evtchn: 2-level until init_control succeeds; argument errors as Xen");

    // 2. Switch.
    let (rc, bits) = init_control(0, cb, CB_OFF as u32);
    expect("init_control(vcpu 0)", rc, 0)?;
    ensure!(bits == 17, "link_bits {bits}, expected 17");
    expect(
        "init_control(vcpu 0) again",
        init_control(0, cb, CB_OFF as u32).0,
        EINVAL,
    )?;
    expect("set_priority(16)", set_priority(first, 16), EINVAL)?;
    ensure!(
        ready().load(Ordering::SeqCst) == 0,
        "ready bits before any event-array page"
    );
    expect("expand_array(page 0)", expand_array(gfn(&ARRAY[0])), 0)?;
    ensure!(
        word(first).load(Ordering::SeqCst) == PENDING | LINKED
            && ready().load(Ordering::SeqCst) == 1 << 7
            && head(7).load(Ordering::SeqCst) == first,
        "the 2-level pending IPI was not queued on priority 7 when its page came: word {:#x}, ready {:#x}, head {}",
        word(first).load(Ordering::SeqCst),
        ready().load(Ordering::SeqCst),
        head(7).load(Ordering::SeqCst)
    );
    let mut heads = [0u32; 16];
    let mut got = 0;
    drain(&mut heads, |p, q| {
        ensure!(p == first && q == 7, "unexpected event {p} on queue {q}");
        got += 1;
        Ok(())
    })?;
    ensure!(got == 1, "carried-over event seen {got} times");
    expect("expand_array(page 1)", expand_array(gfn(&ARRAY[1])), 0)?;
    expect("expand_array(GFN 0xfed00)", expand_array(0xfed00), EINVAL)?;
    println!("fifo-evtchn: init_control and expand_array; the 2-level pending event carried over");

    // 3. 2,000 channels on 16 priorities.
    let mut ports = [0u32; CHANNELS];
    for (i, p) in ports.iter_mut().enumerate() {
        *p = bind_ipi()?;
        ensure!((*p as usize) < 2 * 1024, "port {} beyond two pages", *p);
        expect("set_priority", set_priority(*p, i as u32 % 16), 0)?;
    }
    evtchn::set_callback_vector(CALLBACK_VECTOR);
    let before = upcalls_taken();
    arch::cli();
    for p in ports.iter().rev() {
        expect("EVTCHNOP_send", evtchn::send(*p), 0)?;
    }
    // A second send of a pending port coalesces.
    expect("EVTCHNOP_send", evtchn::send(ports[0]), 0)?;
    ensure!(
        upcall_pending().load(Ordering::SeqCst) != 0 && ready().load(Ordering::SeqCst) == 0xffff,
        "after 2,000 sends: upcall_pending {}, ready {:#x} (expected 1 and 0xffff)",
        upcall_pending().load(Ordering::SeqCst),
        ready().load(Ordering::SeqCst)
    );
    ensure!(
        upcalls_taken() == before,
        "an upcall arrived with interrupts off"
    );
    arch::sti_hlt_cli();
    ensure!(
        upcalls_taken() > before,
        "no upcall once interrupts were enabled"
    );
    // Port → index; each seen once; priorities ascending; reverse order within one.
    let base = ports[0];
    ensure!(
        ports.windows(2).all(|w| w[1] == w[0] + 1),
        "bind_ipi did not hand out consecutive ports"
    );
    let mut seen = [false; CHANNELS];
    let mut count = 0usize;
    let mut last: Option<(u32, usize)> = None;
    drain(&mut heads, |p, q| {
        let i = p
            .checked_sub(base)
            .map(|i| i as usize)
            .filter(|&i| i < CHANNELS);
        let Some(i) = i else {
            fail!("event on port {p}, which was not sent");
        };
        ensure!(!seen[i], "port {p} delivered twice");
        seen[i] = true;
        count += 1;
        ensure!(
            q == i as u32 % 16,
            "port {p} came on queue {q}, its priority is {}",
            i % 16
        );
        if let Some((lq, li)) = last {
            ensure!(
                lq < q || (lq == q && li > i),
                "order: port {} (queue {lq}) before port {p} (queue {q})",
                base + li as u32
            );
        }
        last = Some((q, i));
        Ok(())
    })?;
    ensure!(count == CHANNELS, "{count} of {CHANNELS} events delivered");
    ensure!(ready().load(Ordering::SeqCst) == 0, "queues left ready");
    println!("fifo-evtchn: {CHANNELS} events delivered once each in priority order");

    // 4. Masked port, and a port beyond the array.
    let m = ports[5];
    word(m).fetch_or(MASKED, Ordering::SeqCst);
    expect("EVTCHNOP_send(masked)", evtchn::send(m), 0)?;
    ensure!(
        word(m).load(Ordering::SeqCst) == PENDING | MASKED && ready().load(Ordering::SeqCst) == 0,
        "a masked event was queued: word {:#x}",
        word(m).load(Ordering::SeqCst)
    );
    expect("EVTCHNOP_unmask", evtchn::unmask(m), 0)?;
    let mut n = 0;
    drain(&mut heads, |p, q| {
        ensure!(
            p == m && q == 5,
            "unexpected event {p} on queue {q} after unmask"
        );
        n += 1;
        Ok(())
    })?;
    ensure!(n == 1, "the unmasked event was seen {n} times");
    let mut far = 0;
    while far < 2048 {
        far = bind_ipi()?;
    }
    expect("EVTCHNOP_send(beyond the array)", evtchn::send(far), 0)?;
    ensure!(
        ready().load(Ordering::SeqCst) == 0,
        "an event without a word was queued"
    );
    expect("expand_array(page 2)", expand_array(gfn(&ARRAY[2])), 0)?;
    let mut n = 0;
    drain(&mut heads, |p, q| {
        ensure!(
            p == far && q == 7,
            "unexpected event {p} on queue {q} after expand_array"
        );
        n += 1;
        Ok(())
    })?;
    ensure!(
        n == 1,
        "the event of port {far} was seen {n} times after its page came"
    );
    println!(
        "fifo-evtchn: masked events wait for unmask; events beyond the array wait for their page"
    );
    Ok(())
}
