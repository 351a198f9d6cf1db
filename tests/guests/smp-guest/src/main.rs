//! `smp-guest`: Xen's way of starting the vCPUs of a PVH guest (`VCPUOP_initialise` with a
//! `vcpu_hvm_context`, `VCPUOP_up`), event-channel IPIs between them, `VCPUOP_down`.
//!
//! Run as module 0 with `dom0_max_vcpus=N` (2 ≤ N ≤ 8). Steps, each checked by the guest:
//! 1. N = the first id `VCPUOP_is_up` answers `-ENOENT` for; vCPUs 1..N are not up.
//! 2. Error codes as Xen: up before initialise `-EINVAL`; initialise of the caller itself
//!    `-EEXIST`; vCPU N: initialise, up, down, is_up `-ENOENT`; an unreadable context
//!    `-EFAULT`; bad contexts `-EINVAL` (and the vCPU stays uninitialised).
//! 3. vCPUs 1.. (the last in 32-bit mode when N ≥ 3) are initialised (twice: `-EEXIST`),
//!    still down until `VCPUOP_up`, then each runs: its CPUID vCPU id and stack pointer are
//!    its own, its counter in shared memory grows.
//! 4. IPIs: per AP, a port bound with `EVTCHNOP_bind_ipi` to it (moving it with
//!    `EVTCHNOP_bind_vcpu` is `-EINVAL`, as in Xen), ROUNDS strictly alternating sends from
//!    vCPU 0, each received once, on that AP (its `vcpu_info` flag); ROUNDS sends from the
//!    AP to a port bound to vCPU 0; and a loopback interdomain channel moved to the AP with
//!    `EVTCHNOP_bind_vcpu`, ROUNDS events received there.
//! 5. vCPU 0 takes AP 1 down: `is_up` 0, its counter stops, initialise `-EEXIST`, up
//!    resumes it. Then every AP takes itself down; all `is_up` 0, counters frozen.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use guest_rt::evtchn;
use guest_rt::hypercall::{self, describe};
use guest_rt::smp::{self, MAX_VCPUS};
use guest_rt::xen_abi::errno::Errno;
use guest_rt::xen_abi::vcpu::{VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64};
use guest_rt::xen_abi::xen::DOMID_SELF;
use guest_rt::{ensure, println, vcpu, Fail, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Events sent each way per AP.
const ROUNDS: u32 = 20;
/// Longest wait for any step (emulators are slow).
const WAIT_NS: u64 = 20_000_000_000;
/// Yields while checking that a stopped vCPU's counter stays put.
const FROZEN_YIELDS: u32 = 50;

/// What the 32-bit code writes.
const MAGIC_32: u32 = 0x32b0_0d00;

/// Loop iterations of each AP.
static COUNTER: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// The AP's CPUID vCPU id + 1 (0: not yet reported).
static IDENT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// 1: the AP's stack pointer lay in its own stack; 2: it did not.
static STACK_OK: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// The AP's IPI port (bound to it) + 1, its loopback port + 1, and its port to vCPU 0 + 1.
static IPI_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static LOOP_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static BACK_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Events the AP received on its IPI port and its loopback port.
static RECV: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static RECV_LOOP: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Upcalls an AP took with none of its ports pending. Legal, so only reported: the
/// hypervisor sets a port's pending bit, then the selector, then the flag, and the AP may
/// take the event through the selector before the flag lands (as Linux, it then sees one
/// empty upcall). Events on the wrong vCPU show as short counts here and as vCPU 0's flag
/// set by an IPI to an AP, both checked.
static STRAY: AtomicU32 = AtomicU32::new(0);
/// Sends to vCPU 0 requested of the AP, and done by it.
static BACK_REQ: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static BACK_SENT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Non-zero: the APs return (and so take themselves down).
static STOP: AtomicU32 = AtomicU32::new(0);
/// Where the 32-bit start writes [`MAGIC_32`].
static WORD_32: AtomicU32 = AtomicU32::new(0);

fn port_of(slot: &AtomicU32) -> Option<u32> {
    slot.load(Ordering::SeqCst).checked_sub(1)
}

/// An AP's loop: count, take the events bound to it, send to vCPU 0 on request.
fn ap_main(me: u32) {
    let i = me as usize;
    let id = smp::this_vcpu().map_or(0, |v| v.wrapping_add(1));
    IDENT[i].store(id, Ordering::SeqCst);
    let sp: u64;
    // SAFETY: reads RSP only.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    let own = smp::stack_range(me).is_some_and(|(lo, hi)| (lo..hi).contains(&sp));
    STACK_OK[i].store(if own { 1 } else { 2 }, Ordering::SeqCst);
    while STOP.load(Ordering::SeqCst) == 0 {
        COUNTER[i].fetch_add(1, Ordering::SeqCst);
        if smp::take_upcall(me) {
            let mut any = false;
            if let Some(p) = port_of(&IPI_PORT[i]) {
                if evtchn::test_and_clear(p) {
                    RECV[i].fetch_add(1, Ordering::SeqCst);
                    any = true;
                }
            }
            if let Some(p) = port_of(&LOOP_PORT[i]) {
                if evtchn::test_and_clear(p) {
                    RECV_LOOP[i].fetch_add(1, Ordering::SeqCst);
                    any = true;
                }
            }
            if !any {
                STRAY.fetch_add(1, Ordering::SeqCst);
            }
        }
        if BACK_SENT[i].load(Ordering::SeqCst) < BACK_REQ[i].load(Ordering::SeqCst) {
            if let Some(p) = port_of(&BACK_PORT[i]) {
                // Counted before the send: once vCPU 0 (on another CPU) has the event,
                // it must also see the count.
                BACK_SENT[i].fetch_add(1, Ordering::SeqCst);
                evtchn::send(p);
            }
        }
        hypercall::sched_yield();
    }
}

fn now() -> Result<u64, Fail> {
    evtchn::now()
}

/// Yields until `done()` holds, at most [`WAIT_NS`].
fn wait(what: &str, mut done: impl FnMut() -> bool) -> TestResult {
    let deadline = now()?.saturating_add(WAIT_NS);
    loop {
        if done() {
            return Ok(());
        }
        if now()? > deadline {
            return Err(Fail::new(format_args!("timed out waiting: {what}")));
        }
        hypercall::sched_yield();
    }
}

/// Checks that `rc` is `-want`; counts the case.
fn expect_err(cases: &mut u32, what: &str, rc: i64, want: Errno) -> TestResult {
    ensure!(
        rc == -(want as i64),
        "{what}: returned {}, expected -{}",
        describe(rc),
        want.name()
    );
    *cases += 1;
    Ok(())
}

/// Checks that `vcpu`'s counter does not move over [`FROZEN_YIELDS`] yields.
fn frozen(vcpu: usize) -> TestResult {
    let before = COUNTER[vcpu].load(Ordering::SeqCst);
    for _ in 0..FROZEN_YIELDS {
        hypercall::sched_yield();
    }
    let after = COUNTER[vcpu].load(Ordering::SeqCst);
    ensure!(
        before == after,
        "vCPU {vcpu} is down but its counter moved from {before} to {after}"
    );
    Ok(())
}

/// A valid 32-bit start state: flat ring-0 segments, paging off, at `eip` with `ebx`.
fn context_32(eip: u32, ebx: u32) -> VcpuHvmX86_32 {
    VcpuHvmX86_32 {
        eip,
        ebx,
        eflags: 0x2,
        cr0: 0x11,
        cs_limit: u32::MAX,
        ds_limit: u32::MAX,
        ss_limit: u32::MAX,
        es_limit: u32::MAX,
        tr_limit: 0x67,
        cs_ar: 0xc9b,
        ds_ar: 0xc93,
        ss_ar: 0xc93,
        es_ar: 0xc93,
        tr_ar: 0x8b,
        ..Default::default()
    }
}

#[cfg(target_os = "none")]
fn code_32() -> u32 {
    extern "C" {
        static smp_guest_code32: u8;
    }
    // Only the address is taken (the image lies below 4 GiB).
    core::ptr::addr_of!(smp_guest_code32) as u32
}

#[cfg(not(target_os = "none"))]
fn code_32() -> u32 {
    0
}

// 32-bit protected mode, paging off: stores MAGIC_32 at [EBX], then halts with interrupts
// off for good (the vCPU goes offline).
#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .text.smp_guest.code32, "ax", @progbits
    .code32
    .global smp_guest_code32
smp_guest_code32:
    mov dword ptr [ebx], {magic}
1:
    cli
    hlt
    jmp 1b
    .code64
    .popsection
    "#,
    magic = const MAGIC_32,
);

fn test_main(_si: &StartInfo) -> TestResult {
    let rc = guest_rt::pvclock::map_shared_info();
    ensure!(rc == 0, "map shared_info: {}", describe(rc));
    ensure!(
        smp::this_vcpu() == Some(0),
        "vCPU 0 has CPUID vCPU id {:?}",
        smp::this_vcpu()
    );

    // 1. How many vCPUs.
    let n = (0..=MAX_VCPUS as u32)
        .find(|&v| vcpu::is_up(v) == -(Errno::ENOENT as i64))
        .ok_or_else(|| Fail::new(format_args!("more than {MAX_VCPUS} vCPUs")))?;
    ensure!(n >= 2, "{n} vCPU(s): run with dom0_max_vcpus=2 or more");
    ensure!(vcpu::is_up(0) == 1, "is_up(0) = {}", vcpu::is_up(0));
    for v in 1..n {
        ensure!(
            vcpu::is_up(v) == 0,
            "vCPU {v} up before start: {}",
            vcpu::is_up(v)
        );
    }
    println!("smp-guest: {n} vCPUs, vCPU 0 up, the others down");
    // The 64-bit APs, and the one started in 32-bit mode (the last, with 3 or more).
    let aps64 = if n >= 3 { 1..n - 1 } else { 1..n };
    let ap32 = (n >= 3).then_some(n - 1);

    // 2. Errors as Xen.
    let mut cases = 0;
    let good = smp::context_64(1, ap_main).ok_or_else(|| Fail::new(format_args!("no context")))?;
    expect_err(
        &mut cases,
        "up(1) before initialise",
        smp::up(1),
        Errno::EINVAL,
    )?;
    expect_err(
        &mut cases,
        "initialise(self)",
        smp::initialise(0, &good),
        Errno::EEXIST,
    )?;
    expect_err(
        &mut cases,
        "initialise(N)",
        smp::initialise(n, &good),
        Errno::ENOENT,
    )?;
    expect_err(&mut cases, "up(N)", smp::up(n), Errno::ENOENT)?;
    expect_err(&mut cases, "down(N)", smp::down(n), Errno::ENOENT)?;
    expect_err(&mut cases, "is_up(N)", vcpu::is_up(n), Errno::ENOENT)?;
    // SAFETY: a deliberately unmapped argument (beyond the 4 GiB identity map).
    let rc = unsafe { vcpu::op(0, 1, 0x7f_0000_0000) };
    expect_err(&mut cases, "initialise(1, unmapped)", rc, Errno::EFAULT)?;
    let r64 = good.x86_64();
    let bad64 = [
        (
            "RIP not canonical",
            VcpuHvmX86_64 {
                rip: 1 << 47,
                ..r64
            },
        ),
        (
            "CR0.PG clear",
            VcpuHvmX86_64 {
                cr0: r64.cr0 & !(1 << 31),
                ..r64
            },
        ),
        (
            "CR4.PAE clear",
            VcpuHvmX86_64 {
                cr4: r64.cr4 & !(1 << 5),
                ..r64
            },
        ),
        (
            "EFER.LME clear",
            VcpuHvmX86_64 {
                efer: r64.efer & !(1 << 8),
                ..r64
            },
        ),
        (
            "EFER.SVME",
            VcpuHvmX86_64 {
                efer: r64.efer | 1 << 12,
                ..r64
            },
        ),
        (
            "CR4.VMXE",
            VcpuHvmX86_64 {
                cr4: r64.cr4 | 1 << 13,
                ..r64
            },
        ),
    ];
    for (what, r) in bad64 {
        let rc = smp::initialise(1, &VcpuHvmContext::from_64(&r));
        expect_err(&mut cases, what, rc, Errno::EINVAL)?;
    }
    let c32 = context_32(code_32(), 0);
    let bad32 = [
        ("null CS", VcpuHvmX86_32 { cs_ar: 0, ..c32 }),
        (
            "SS.DPL 3, CS.DPL 0",
            VcpuHvmX86_32 {
                ss_ar: 0xcf3,
                ..c32
            },
        ),
        ("16-bit TSS in TR", VcpuHvmX86_32 { tr_ar: 0x83, ..c32 }),
        (
            "EIP beyond CS limit",
            VcpuHvmX86_32 {
                cs_limit: 0xffff,
                cs_ar: 0x49b,
                eip: 0x1_0000,
                ..c32
            },
        ),
        (
            "attribute bit 12",
            VcpuHvmX86_32 {
                ds_ar: 0x1c93,
                ..c32
            },
        ),
    ];
    for (what, r) in bad32 {
        let rc = smp::initialise(1, &VcpuHvmContext::from_32(&r));
        expect_err(&mut cases, what, rc, Errno::EINVAL)?;
    }
    let mut bad_mode = good;
    bad_mode.mode = 2;
    expect_err(
        &mut cases,
        "mode 2",
        smp::initialise(1, &bad_mode),
        Errno::EINVAL,
    )?;
    let mut bad_pad = good;
    bad_pad.pad = 1;
    expect_err(
        &mut cases,
        "pad",
        smp::initialise(1, &bad_pad),
        Errno::EINVAL,
    )?;
    // None of them initialised vCPU 1.
    expect_err(
        &mut cases,
        "up(1) after bad contexts",
        smp::up(1),
        Errno::EINVAL,
    )?;
    ensure!(vcpu::is_up(1) == 0, "vCPU 1 up after bad contexts");
    println!("smp-guest: {cases} error cases as Xen");

    // 3. Start the APs.
    for v in aps64.clone() {
        let ctx = smp::context_64(v, ap_main)
            .ok_or_else(|| Fail::new(format_args!("no context for {v}")))?;
        let rc = smp::initialise(v, &ctx);
        ensure!(rc == 0, "initialise({v}): {}", describe(rc));
        let rc = smp::initialise(v, &ctx);
        ensure!(
            rc == -(Errno::EEXIST as i64),
            "second initialise({v}): {}",
            describe(rc)
        );
        for _ in 0..10 {
            hypercall::sched_yield();
        }
        ensure!(vcpu::is_up(v) == 0, "vCPU {v} up after initialise alone");
        ensure!(
            COUNTER[v as usize].load(Ordering::SeqCst) == 0,
            "vCPU {v} ran before up"
        );
        let rc = smp::up(v);
        ensure!(rc == 0, "up({v}): {}", describe(rc));
        ensure!(vcpu::is_up(v) == 1, "vCPU {v} not up after up");
        let rc = smp::up(v);
        ensure!(rc == 0, "up({v}) again: {}", describe(rc));
    }
    for v in aps64.clone() {
        let i = v as usize;
        wait("every AP counting", || {
            COUNTER[i].load(Ordering::SeqCst) > 100
        })?;
        let id = IDENT[i].load(Ordering::SeqCst).wrapping_sub(1);
        ensure!(id == v, "vCPU {v} reports CPUID vCPU id {id}");
        ensure!(
            STACK_OK[i].load(Ordering::SeqCst) == 1,
            "vCPU {v} is not on its own stack"
        );
    }
    let counts: [u64; MAX_VCPUS] = core::array::from_fn(|i| COUNTER[i].load(Ordering::SeqCst));
    println!(
        "smp-guest: vCPUs {}..{} started in 64-bit mode by initialise+up; each on its own stack with its own id; counters {:?}",
        aps64.start,
        aps64.end - 1,
        &counts[aps64.start as usize..aps64.end as usize]
    );
    if let Some(v) = ap32 {
        let ctx = VcpuHvmContext::from_32(&context_32(code_32(), WORD_32.as_ptr() as u32));
        let rc = smp::initialise(v, &ctx);
        ensure!(rc == 0, "initialise({v}, 32-bit): {}", describe(rc));
        let rc = smp::up(v);
        ensure!(rc == 0, "up({v}, 32-bit): {}", describe(rc));
        wait("the 32-bit vCPU's store", || {
            WORD_32.load(Ordering::SeqCst) == MAGIC_32
        })?;
        wait("the 32-bit vCPU halting", || vcpu::is_up(v) == 0)?;
        println!("smp-guest: vCPU {v} started in 32-bit protected mode (paging off): stored {MAGIC_32:#x}, halted");
    }

    // 4. IPIs.
    for v in aps64.clone() {
        let i = v as usize;
        let p = evtchn::bind_ipi(v);
        ensure!(p >= 0, "bind_ipi({v}): {}", describe(p));
        let p = p as u32;
        let rc = evtchn::bind_vcpu(p, 0);
        ensure!(
            rc == -(Errno::EINVAL as i64),
            "bind_vcpu(IPI port, 0): {}",
            describe(rc)
        );
        IPI_PORT[i].store(p + 1, Ordering::SeqCst);
        for r in 1..=ROUNDS {
            smp::take_upcall(0);
            let rc = evtchn::send(p);
            ensure!(rc == 0, "send({p}): {}", describe(rc));
            wait("an IPI received", || RECV[i].load(Ordering::SeqCst) >= r)?;
            ensure!(!smp::take_upcall(0), "IPI to vCPU {v} flagged vCPU 0");
        }
        // Loopback channel, its receiving end moved to the AP.
        let a = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
        ensure!(a >= 0, "alloc_unbound: {}", describe(a));
        let b = evtchn::bind_interdomain(DOMID_SELF, a as u32);
        ensure!(b >= 0, "bind_interdomain: {}", describe(b));
        evtchn::test_and_clear(b as u32);
        let rc = evtchn::bind_vcpu(b as u32, v);
        ensure!(rc == 0, "bind_vcpu({b}, {v}): {}", describe(rc));
        LOOP_PORT[i].store(b as u32 + 1, Ordering::SeqCst);
        for r in 1..=ROUNDS {
            let rc = evtchn::send(a as u32);
            ensure!(rc == 0, "send({a}): {}", describe(rc));
            wait("a loopback event received", || {
                RECV_LOOP[i].load(Ordering::SeqCst) >= r
            })?;
        }
        // From the AP to vCPU 0.
        let q = evtchn::bind_ipi(0);
        ensure!(q >= 0, "bind_ipi(0): {}", describe(q));
        let q = q as u32;
        BACK_PORT[i].store(q + 1, Ordering::SeqCst);
        let mut got = 0;
        for r in 1..=ROUNDS {
            smp::take_upcall(0);
            BACK_REQ[i].store(r, Ordering::SeqCst);
            wait("an IPI from the AP", || {
                smp::take_upcall(0) && evtchn::test_and_clear(q)
            })?;
            got += 1;
        }
        ensure!(
            RECV[i].load(Ordering::SeqCst) == ROUNDS
                && RECV_LOOP[i].load(Ordering::SeqCst) == ROUNDS
                && BACK_SENT[i].load(Ordering::SeqCst) == ROUNDS
                && got == ROUNDS,
            "vCPU {v}: counts {} {} {} {got}",
            RECV[i].load(Ordering::SeqCst),
            RECV_LOOP[i].load(Ordering::SeqCst),
            BACK_SENT[i].load(Ordering::SeqCst)
        );
    }
    let stray = STRAY.load(Ordering::SeqCst);
    if stray != 0 {
        println!(
            "smp-guest: {stray} empty upcall(s) on the APs (a flag set after its event was taken)"
        );
    }
    println!(
        "smp-guest: IPIs: {ROUNDS} to each AP by bind_ipi, {ROUNDS} by a loopback port moved with bind_vcpu, {ROUNDS} from each AP to vCPU 0; each received once on its vCPU"
    );

    // 5. Down.
    let rc = smp::down(1);
    ensure!(rc == 0, "down(1): {}", describe(rc));
    ensure!(vcpu::is_up(1) == 0, "is_up(1) after down(1)");
    frozen(1)?;
    expect_err(
        &mut cases,
        "initialise(1) after down",
        smp::initialise(1, &good),
        Errno::EEXIST,
    )?;
    let before = COUNTER[1].load(Ordering::SeqCst);
    let rc = smp::up(1);
    ensure!(rc == 0, "up(1) again: {}", describe(rc));
    wait("vCPU 1 resuming", || {
        COUNTER[1].load(Ordering::SeqCst) > before + 10
    })?;
    println!("smp-guest: vCPU 1 taken down by vCPU 0 (is_up 0, counter frozen at {before}), resumed by up");
    STOP.store(1, Ordering::SeqCst);
    for v in aps64.clone() {
        wait("an AP taking itself down", || vcpu::is_up(v) == 0)?;
    }
    for v in aps64.clone() {
        frozen(v as usize)?;
    }
    ensure!(vcpu::is_up(0) == 1, "is_up(0) = {}", vcpu::is_up(0));
    println!("smp-guest: all APs down (VCPUOP_down of themselves), is_up 0, counters frozen");
    Ok(())
}
