//! Whether `rep movsb` is fast on this machine, measured once at boot: guests get the
//! fast-string CPUID hints only if it is (`hvm::cpuid::rep_movsb_is_fast`).
#![allow(unsafe_code)]

use alloc::vec;
use core::sync::atomic::{AtomicBool, Ordering};

/// The verdict, set once by [`measure`] on the boot CPU before any guest runs (the CPUs
/// are checked to be alike, so one verdict serves them all).
static FAST: AtomicBool = AtomicBool::new(true);

/// Bytes copied per timed run: more than a few pages, well inside the caches.
const BYTES: usize = 64 * 1024;
/// Timed runs of each kind; the fastest counts (an interrupt or an emulator's hiccup
/// only ever makes a run slower).
const RUNS: usize = 5;

/// What [`measure`] found.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub movsb_cycles: u64,
    pub movsq_cycles: u64,
    pub fast: bool,
}

/// Times copies of the same 64 KiB buffer with `rep movsb` and with `rep movsq`, records
/// whether `rep movsb` is fast enough for the hints and returns the figures.
pub fn measure() -> Verdict {
    let src = vec![0x5au64; BYTES / 8];
    let mut dst = vec![0u64; BYTES / 8];
    let (mut movsb, mut movsq) = (u64::MAX, u64::MAX);
    for _ in 0..RUNS {
        movsb = movsb.min(timed(|| copy_bytes(&mut dst, &src)));
        movsq = movsq.min(timed(|| copy_words(&mut dst, &src)));
    }
    assert!(dst == src, "fast-string measurement: the copy is wrong");
    let fast = crate::hvm::cpuid::rep_movsb_is_fast(movsb, movsq);
    FAST.store(fast, Ordering::SeqCst);
    Verdict {
        movsb_cycles: movsb,
        movsq_cycles: movsq,
        fast,
    }
}

/// The boot verdict (true until [`measure`] says otherwise).
pub fn fast() -> bool {
    FAST.load(Ordering::SeqCst)
}

fn timed(f: impl FnOnce()) -> u64 {
    let t0 = super::tsc::rdtsc();
    f();
    super::tsc::rdtsc().saturating_sub(t0)
}

fn copy_bytes(dst: &mut [u64], src: &[u64]) {
    let n = dst.len().min(src.len()) * 8;
    // SAFETY: `rep movsb` copies `n` bytes from `src` to `dst`; both slices hold at least
    // `n` bytes, do not overlap (one is borrowed mutably) and the direction flag is clear
    // (the Rust ABI guarantees it at every call).
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rsi") src.as_ptr() => _,
            inout("rdi") dst.as_mut_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
}

fn copy_words(dst: &mut [u64], src: &[u64]) {
    let n = dst.len().min(src.len());
    // SAFETY: `rep movsq` copies `n` eight-byte words from `src` to `dst`; both slices
    // hold at least `n` words and do not overlap, and the direction flag is clear.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            inout("rcx") n => _,
            inout("rsi") src.as_ptr() => _,
            inout("rdi") dst.as_mut_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
}
