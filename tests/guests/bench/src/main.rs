//! `bench`: what a cheap hypercall and a trivial exit cost, for `cargo xtask bench`.
//!
//! Measures (a) `xen_version(XENVER_version)`, a hypercall with no side effect, and (b)
//! `CPUID` leaf 0, which every hypervisor intercepts. Each is called [`WARMUP`] times, then
//! timed in [`BATCHES`] batches of [`BATCH`] calls with the TSC around each batch (not each
//! call: a hypervisor that emulates RDTSC would otherwise add its own exit to every sample).
//! The figure is the median batch's cost per call; the mean over all calls comes too. TSC
//! cycles become nanoseconds with the TSC rate the pvclock implies (as Linux's
//! `xen_tsc_khz`), else CPUID 0x40000003 ECX (Xen's guest TSC kHz). One line:
//!
//! `bench: hypercall_ns=N cpuid_ns=N hypercall_cycles=N cpuid_cycles=N hypercall_mean_ns=N
//! cpuid_mean_ns=N tsc_khz=N tsc_emulated=0|1 calls=N`
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, xen_version_number};
use guest_rt::{arch, ensure, println, pvclock, StartInfo, TestResult};

guest_rt::entry!(test_main);

const WARMUP: u32 = 1_000;
const BATCHES: usize = 100;
const BATCH: u32 = 100;

/// Cost per call in TSC cycles: median batch, and mean over every call.
struct Cost {
    median: u64,
    mean: u64,
}

fn measure(mut op: impl FnMut()) -> Cost {
    for _ in 0..WARMUP {
        op();
    }
    let mut per_call = [0u64; BATCHES];
    let mut total = 0;
    for sample in &mut per_call {
        let t0 = arch::rdtsc_ordered();
        for _ in 0..BATCH {
            op();
        }
        let cycles = arch::rdtsc_ordered().wrapping_sub(t0);
        total += cycles;
        *sample = cycles / u64::from(BATCH);
    }
    per_call.sort_unstable();
    Cost {
        median: per_call[BATCHES / 2],
        mean: total / (BATCHES as u64 * u64::from(BATCH)),
    }
}

/// The TSC rate in kHz: the pvclock's, else Xen's CPUID time leaf (0 when neither says).
fn tsc_khz() -> u64 {
    if pvclock::map_shared_info() == 0 {
        if let Some(t) = pvclock::time_info() {
            let khz = pvclock::tsc_khz(&t);
            if khz != 0 {
                return khz;
            }
        }
    }
    u64::from(arch::cpuid(0x4000_0003, 0).ecx)
}

fn ns(cycles: u64, khz: u64) -> u64 {
    cycles * 1_000_000 / khz
}

fn test_main(_si: &StartInfo) -> TestResult {
    let version = xen_version_number();
    ensure!(
        version > 0,
        "xen_version(XENVER_version) returned {}",
        describe(version)
    );
    let khz = tsc_khz();
    ensure!(
        khz != 0,
        "no TSC rate: neither the pvclock nor CPUID 0x40000003 gives one"
    );
    // Xen's time leaf, EAX bit 0: RDTSC is emulated (each read is an exit).
    let tsc_emulated = arch::cpuid(0x4000_0003, 0).eax & 1;

    let hypercall = measure(|| {
        core::hint::black_box(xen_version_number());
    });
    let cpuid = measure(|| {
        core::hint::black_box(arch::cpuid(0, 0));
    });
    println!(
        "bench: hypercall_ns={} cpuid_ns={} hypercall_cycles={} cpuid_cycles={} \
         hypercall_mean_ns={} cpuid_mean_ns={} tsc_khz={khz} tsc_emulated={tsc_emulated} calls={}",
        ns(hypercall.median, khz),
        ns(cpuid.median, khz),
        hypercall.median,
        cpuid.median,
        ns(hypercall.mean, khz),
        ns(cpuid.mean, khz),
        BATCHES as u32 * BATCH,
    );
    ensure!(
        hypercall.median > 0 && cpuid.median > 0,
        "a zero cost: TSC not running?"
    );
    Ok(())
}
