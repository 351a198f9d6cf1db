//! `held-regs`: registers that only the CPU holds follow their vCPU.
//!
//! A guest reaches CR2, DR0-DR3 and DR6 without an exit, and on VMX the VMCS holds none of
//! them (the VMCB holds CR2 and DR6, not DR0-DR3). When two vCPUs share a physical CPU,
//! the hypervisor must give each its own values back; otherwise a page-fault handler that
//! is preempted before it reads CR2 sees the other vCPU's fault address (Linux then kills
//! a process for a fault it never had), and one domain reads another's breakpoints.
//!
//! Run as module 0 with `dom0_max_vcpus=2` on one CPU. Both vCPUs take ROUNDS page faults
//! each at addresses of their own (above the 4 GiB the runtime maps). The page-fault
//! handler writes a pattern of its own into DR0-DR3 and DR6, then waits until the other
//! vCPU has entered the handler too, which on one CPU means the other ran (and faulted) in
//! between, and only then reads CR2 and the debug registers back. Two phases: the wait
//! yields (`SCHEDOP_yield`), then it spins with interrupts off until the host's timer
//! preempts the vCPU. Every value read back must be the vCPU's own, and every wait but
//! the last must have seen the other vCPU run.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use guest_rt::{ensure, evtchn, hypercall, println, pvclock, smp, Fail, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// The phases: how a handler waits for the other vCPU.
const PHASES: [&str; 2] = ["yield", "preemption"];
/// Page faults per vCPU in each phase (a preempted wait costs a time slice).
const ROUNDS: [u32; 2] = [20, 6];
/// Longest wait in a handler, and for the other vCPU at a phase's start.
const WAIT_NS: u64 = 20_000_000_000;
/// DR6's bits that always read as 1 (Intel SDM 17.2.3), the status bits B0-B3 clear.
const DR6_FIXED: u64 = 0xffff_0ff0;
/// Register names in mismatch reports.
const NAMES: [&str; 6] = ["DR0", "DR1", "DR2", "DR3", "DR6", "CR2"];

/// Per phase and vCPU: handler entries, waits that saw the other vCPU's entry, the vCPU
/// has reached the phase, has finished it.
static ENTRIES: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
static SWITCHED: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
static READY: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
static DONE: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
/// Per vCPU: its phase and round, the address its fault is at.
static PHASE: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static ROUND: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static EXPECT_CR2: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Values read back that were not the vCPU's own, and the first of them: vCPU, phase,
/// round, register (index into NAMES), expected, found.
static MISMATCHES: AtomicU32 = AtomicU32::new(0);
static FIRST: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// Handler waits that ran out of time.
static TIMEOUTS: AtomicU32 = AtomicU32::new(0);
/// vCPU 1 failed to reach a phase in time.
static AP_FAILED: AtomicU32 = AtomicU32::new(0);

/// Where vCPU `me` faults in `phase`, `round`: not page-aligned, so CR2 names the byte.
fn fault_address(me: usize, phase: usize, round: u32) -> u64 {
    0x1_0000_0000 + ((me as u64) << 28) + ((phase as u64) << 24) + (u64::from(round) << 12) + 0x18
}

/// The debug-register values vCPU `me` sets in `phase`, `round`: DR0-DR3 distinct
/// canonical addresses, DR6 a non-zero B0-B3 pattern.
fn pattern(me: usize, phase: usize, round: u32) -> [u64; 5] {
    let base = 0x40_0000 * (me as u64 + 1) + 0x1_0000 * phase as u64 + 0x40 * u64::from(round);
    let b = (me as u64 * 5 + phase as u64 * 3 + u64::from(round)) % 15 + 1;
    [base, base + 8, base + 16, base + 24, DR6_FIXED | b]
}

#[cfg(target_os = "none")]
mod hw {
    //! The faulting load, the page-fault gate and the debug registers.
    use core::arch::{asm, global_asm};

    global_asm!(
        r#"
        .pushsection .text.held_regs, "ax", @progbits
        .code64
        .global held_regs_probe
        .global held_regs_resume
    held_regs_probe:
        mov rax, qword ptr [rdi]
    held_regs_resume:
        ret

        .balign 16
        .global held_regs_pf
    held_regs_pf:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        push r10
        push r11
        lea rdi, [rsp + 80]
        sub rsp, 8
        call {handler}
        add rsp, 8
        pop r11
        pop r10
        pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        add rsp, 8
        iretq
        .popsection
        "#,
        handler = sym super::on_page_fault,
    );

    extern "C" {
        fn held_regs_probe(address: u64);
        static held_regs_resume: u8;
        static held_regs_pf: u8;
    }

    /// Loads from `address`, which faults; the handler resumes after the load.
    pub fn probe(address: u64) {
        // SAFETY: the load faults (the address is not mapped) and the installed handler
        // resumes at `held_regs_resume`, which returns; only RAX is clobbered (caller-saved).
        unsafe { held_regs_probe(address) }
    }

    /// The load's address and the one after it.
    pub fn probe_range() -> (u64, u64) {
        // Only addresses are taken.
        (
            held_regs_probe as *const () as u64,
            core::ptr::addr_of!(held_regs_resume) as u64,
        )
    }

    /// Points the page-fault gate at this test's handler.
    pub fn install_gate() {
        // SAFETY: `held_regs_pf` handles a page fault's frame (error code included) and
        // returns with IRETQ, preserving every register; no page fault is raised yet.
        unsafe { guest_rt::idt::set_gate(14, core::ptr::addr_of!(held_regs_pf) as u64) };
    }

    pub fn read_cr2() -> u64 {
        guest_rt::arch::read_cr2()
    }

    macro_rules! dr {
        ($n:literal) => {{
            let v: u64;
            // SAFETY: reading a debug register in ring 0 has no side effect.
            unsafe { asm!(concat!("mov {}, dr", $n), out(reg) v, options(nomem, nostack)) };
            v
        }};
        ($n:literal, $v:expr) => {{
            // SAFETY: DR7 enables no breakpoint, so addresses in DR0-DR3 and status bits
            // in DR6 have no effect.
            unsafe { asm!(concat!("mov dr", $n, ", {}"), in(reg) $v, options(nomem, nostack)) };
        }};
    }

    /// DR0-DR3 and DR6.
    pub fn read_drs() -> [u64; 5] {
        [dr!(0), dr!(1), dr!(2), dr!(3), dr!(6)]
    }

    pub fn write_drs(v: &[u64; 5]) {
        dr!(0, v[0]);
        dr!(1, v[1]);
        dr!(2, v[2]);
        dr!(3, v[3]);
        dr!(6, v[4]);
    }
}

#[cfg(not(target_os = "none"))]
mod hw {
    //! Host build: `cargo test` compiles the guest only.
    pub fn probe(_: u64) {}
    pub fn probe_range() -> (u64, u64) {
        (0, 0)
    }
    pub fn install_gate() {
        // Nothing to install; the handler is still compiled (and linted).
        let _ = super::on_page_fault as extern "C" fn(&mut u64);
    }
    pub fn read_cr2() -> u64 {
        0
    }
    pub fn read_drs() -> [u64; 5] {
        [0; 5]
    }
    pub fn write_drs(_: &[u64; 5]) {}
}

/// The vCPU whose stack `address` lies in (vCPU 1 runs on the runtime's stack 1).
fn vcpu_of_stack(address: u64) -> usize {
    match smp::stack_range(1) {
        Some((lo, hi)) if (lo..hi).contains(&address) => 1,
        _ => 0,
    }
}

fn mismatch(me: usize, phase: usize, round: u32, reg: usize, want: u64, got: u64) {
    if MISMATCHES.fetch_add(1, SeqCst) == 0 {
        for (slot, v) in
            FIRST
                .iter()
                .zip([me as u64, phase as u64, round.into(), reg as u64, want, got])
        {
            slot.store(v, SeqCst);
        }
    }
}

/// Called by the page-fault gate with the address of the saved RIP.
extern "C" fn on_page_fault(rip: &mut u64) {
    let (probe, resume) = hw::probe_range();
    if *rip != probe {
        guest_rt::fail_now(format_args!(
            "unexpected page fault at {:#x}, cr2 {:#x}",
            *rip,
            hw::read_cr2()
        ));
    }
    let me = vcpu_of_stack(core::ptr::from_mut(rip) as u64);
    let other = 1 - me;
    let phase = PHASE[me].load(SeqCst) as usize;
    let round = ROUND[me].load(SeqCst);
    let mine = pattern(me, phase, round);
    hw::write_drs(&mine);
    let seen = ENTRIES[phase][other].load(SeqCst);
    ENTRIES[phase][me].fetch_add(1, SeqCst);
    let deadline = pvclock::now_ns().unwrap_or(0).saturating_add(WAIT_NS);
    loop {
        if ENTRIES[phase][other].load(SeqCst) != seen {
            SWITCHED[phase][me].fetch_add(1, SeqCst);
            break;
        }
        if DONE[phase][other].load(SeqCst) != 0 {
            break;
        }
        if pvclock::now_ns().unwrap_or(u64::MAX) > deadline {
            TIMEOUTS.fetch_add(1, SeqCst);
            break;
        }
        if phase == 0 {
            hypercall::sched_yield();
        } else {
            core::hint::spin_loop();
        }
    }
    let cr2 = hw::read_cr2();
    let want_cr2 = EXPECT_CR2[me].load(SeqCst);
    if cr2 != want_cr2 {
        mismatch(me, phase, round, 5, want_cr2, cr2);
    }
    let got = hw::read_drs();
    for (reg, (&want, &got)) in mine.iter().zip(&got).enumerate() {
        // DR6: only B0-B3 are compared (other bits depend on the CPU model).
        let (want, got) = if reg == 4 {
            (want & 0xf, got & 0xf)
        } else {
            (want, got)
        };
        if want != got {
            mismatch(me, phase, round, reg, want, got);
        }
    }
    *rip = resume;
}

/// Waits (yielding) until `done()`, at most WAIT_NS.
fn wait(mut done: impl FnMut() -> bool) -> bool {
    let deadline = pvclock::now_ns().unwrap_or(0).saturating_add(WAIT_NS);
    while !done() {
        if pvclock::now_ns().unwrap_or(u64::MAX) > deadline {
            return false;
        }
        hypercall::sched_yield();
    }
    true
}

/// vCPU `me`'s part of every phase; false if the other vCPU never reached one.
fn run_phases(me: usize) -> bool {
    let other = 1 - me;
    for phase in 0..PHASES.len() {
        PHASE[me].store(phase as u32, SeqCst);
        READY[phase][me].store(1, SeqCst);
        if !wait(|| READY[phase][other].load(SeqCst) != 0) {
            return false;
        }
        for round in 0..ROUNDS[phase] {
            ROUND[me].store(round, SeqCst);
            let address = fault_address(me, phase, round);
            EXPECT_CR2[me].store(address, SeqCst);
            hw::probe(address);
        }
        DONE[phase][me].store(1, SeqCst);
    }
    true
}

fn ap_main(me: u32) {
    if !run_phases(me as usize) {
        AP_FAILED.store(1, SeqCst);
    }
}

fn test_main(_si: &StartInfo) -> TestResult {
    let rc = pvclock::map_shared_info();
    ensure!(rc == 0, "mapping shared_info: {}", hypercall::describe(rc));
    evtchn::now()?;
    hw::install_gate();
    smp::start(1, ap_main)?;
    ensure!(run_phases(0), "vCPU 1 did not reach every phase");
    ensure!(
        wait(|| DONE[PHASES.len() - 1][1].load(SeqCst) != 0 || AP_FAILED.load(SeqCst) != 0),
        "vCPU 1 did not finish"
    );
    ensure!(
        AP_FAILED.load(SeqCst) == 0,
        "vCPU 0 did not reach every phase (seen from vCPU 1)"
    );
    let bad = MISMATCHES.load(SeqCst);
    if bad != 0 {
        let f: [u64; 6] = core::array::from_fn(|i| FIRST[i].load(SeqCst));
        return Err(Fail::new(format_args!(
            "{bad} registers read back wrong; first: vCPU {} {} round {}: {} = {:#x}, set {:#x}",
            f[0],
            PHASES[f[1] as usize % 2],
            f[2],
            NAMES[f[3] as usize % 6],
            f[5],
            f[4]
        )));
    }
    let timeouts = TIMEOUTS.load(SeqCst);
    ensure!(timeouts == 0, "{timeouts} handler waits timed out");
    for (phase, name) in PHASES.iter().enumerate() {
        let rounds = ROUNDS[phase];
        let mut switched = 0;
        for me in 0..2 {
            let entries = ENTRIES[phase][me].load(SeqCst);
            ensure!(
                entries == rounds,
                "{name}: vCPU {me} took {entries} page faults, expected {rounds}"
            );
            let s = SWITCHED[phase][me].load(SeqCst);
            ensure!(
                s + 1 >= rounds,
                "{name}: vCPU {me} saw the other vCPU run in only {s} of its {rounds} handler waits"
            );
            switched += s;
        }
        println!(
            "held-regs: {name}: 2 vCPUs x {rounds} #PFs on one CPU, the other vCPU ran in {switched} of {} handler waits; CR2, DR0-DR3 and DR6 read back as set in all",
            2 * rounds
        );
    }
    Ok(())
}
