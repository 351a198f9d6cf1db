//! `cpu-burn`: burns CPU without a break for a window of Xen system time and reports which
//! share of that window its vCPU actually ran, from `VCPUOP_get_runstate_info`
//! (`time[RUNSTATE_running]`), so that tests can check scheduler weights and caps.
//!
//! Command line: `[label=NAME] [from_ms=T] [secs=S] [expect_share=P tolerance=Q]`.
//!
//! * The window is `[from_ms, from_ms + S s)` of **absolute** system time (the pvclock's,
//!   which all domains share), so that domains started a little apart measure the same
//!   interval. Default `from_ms`: 1000 ms after the guest started; `secs` default 5. A guest
//!   that starts after `from_ms` fails (it would measure a different window).
//! * The guest burns from its start to the end of the window, so it competes for the CPU
//!   for the whole window.
//! * With `expect_share=P` (percent, one decimal allowed) it passes only if its share is
//!   within `tolerance` points (default 5) of P; without it, it only reports.
//!
//! Prints `cpu-burn NAME: ran R ms of W ms wall (P.P %)`,
//! `cpu-burn NAME: running N ns in window [A ms, B ms)` and the work done,
//! `cpu-burn NAME: K kilo-steps per second of window` (a step is one round of an
//! xorshift generator: register arithmetic, no memory traffic, no instruction that leaves
//! the emulator's translated code). The running time can never exceed the wall time: more
//! than 1 % over fails too.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::describe;
use guest_rt::{arch, ensure, evtchn, fail, println, pvclock, vcpu, Fail, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Parses `12`, `12.3` (one decimal) as tenths.
fn tenths(s: &str) -> Option<u64> {
    match s.split_once('.') {
        None => s.parse::<u64>().ok()?.checked_mul(10),
        Some((i, f)) if f.len() == 1 => {
            Some(i.parse::<u64>().ok()?.checked_mul(10)? + f.parse::<u64>().ok()?)
        }
        _ => None,
    }
}

fn tenths_arg(si: &StartInfo, key: &str, default: Option<u64>) -> Result<Option<u64>, Fail> {
    match si.arg(key) {
        None => Ok(default),
        Some(v) => match tenths(v) {
            Some(t) => Ok(Some(t)),
            None => Err(Fail::new(format_args!(
                "{key}={v}: expected a percentage like 33.3"
            ))),
        },
    }
}

fn running_ns() -> Result<u64, Fail> {
    vcpu::runstate_running_ns().map_err(|rc| {
        Fail::new(format_args!(
            "VCPUOP_get_runstate_info(0) returned {}",
            describe(rc)
        ))
    })
}

/// Spins until system time `t`; returns the time it saw last and how many blocks of 1000
/// generator steps it ran (the work done, for throughput figures). The work is plain
/// arithmetic on purpose: `pause`, which a spin-wait would use, ends the translated block
/// under QEMU TCG and goes through its main loop and global lock, so two CPUs pausing
/// measure that lock, not the CPUs.
fn burn_until(t: u64) -> Result<(u64, u64), Fail> {
    let mut blocks = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    loop {
        let now = evtchn::now()?;
        if now >= t {
            core::hint::black_box(x);
            return Ok((now, blocks));
        }
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = core::hint::black_box(x);
        blocks = blocks.wrapping_add(1);
    }
}

fn test_main(si: &StartInfo) -> TestResult {
    let rc = pvclock::map_shared_info();
    ensure!(
        rc == 0,
        "XENMEM_add_to_physmap(shared_info) returned {}",
        describe(rc)
    );
    let start = evtchn::now()?;
    let domid = arch::xen_vcpu_and_domid().map_or(-1, |(_, d)| i32::from(d));
    let mut label_buf = [0u8; 16];
    let label = match si.arg("label") {
        Some(l) => l,
        None => {
            use core::fmt::Write;
            let mut w = Buf(&mut label_buf, 0);
            let _ = write!(w, "d{domid}");
            let n = w.1;
            core::str::from_utf8(&label_buf[..n]).unwrap_or("?")
        }
    };
    let from_ns = si.arg_u64("from_ms", start / 1_000_000 + 1000)? * 1_000_000;
    let secs = si.arg_u64("secs", 5)?;
    ensure!(secs > 0, "secs=0");
    let expect = tenths_arg(si, "expect_share", None)?;
    let tolerance = tenths_arg(si, "tolerance", Some(50))?.unwrap_or(50);
    let to_ns = from_ns + secs * 1_000_000_000;
    println!(
        "cpu-burn {label}: domain {domid} started at {} ms, window [{} ms, {} ms)",
        start / 1_000_000,
        from_ns / 1_000_000,
        to_ns / 1_000_000
    );
    ensure!(
        start < from_ns,
        "started at {} ms, after the window began at {} ms",
        start / 1_000_000,
        from_ns / 1_000_000
    );

    let (t0, _) = burn_until(from_ns)?;
    let r0 = running_ns()?;
    let (t1, blocks) = burn_until(to_ns)?;
    let r1 = running_ns()?;
    let (ran, wall) = (r1.saturating_sub(r0), t1 - t0);
    let share = ran * 1000 / wall.max(1); // tenths of a percent
    println!(
        "cpu-burn {label}: ran {} ms of {} ms wall ({}.{} %)",
        ran / 1_000_000,
        wall / 1_000_000,
        share / 10,
        share % 10
    );
    println!(
        "cpu-burn {label}: running {ran} ns in window [{} ms, {} ms)",
        t0 / 1_000_000,
        t1 / 1_000_000
    );
    // Work per second of the window, for `cargo xtask bench` (a rate: windows differ by
    // the few ms the first clock read takes).
    println!(
        "cpu-burn {label}: {} kilo-steps per second of window",
        blocks.saturating_mul(1_000_000_000) / wall.max(1)
    );
    ensure!(
        r1 >= r0,
        "runstate running time went backwards: {r0} -> {r1}"
    );
    ensure!(
        ran <= wall + wall / 100,
        "ran {ran} ns in a window of {wall} ns"
    );
    if let Some(want) = expect {
        let (lo, hi) = (want.saturating_sub(tolerance), want + tolerance);
        if !(lo..=hi).contains(&share) {
            fail!(
                "share {}.{} % outside {}.{} +- {}.{} %",
                share / 10,
                share % 10,
                want / 10,
                want % 10,
                tolerance / 10,
                tolerance % 10
            );
        }
        println!(
            "cpu-burn {label}: share within {}.{} +- {}.{} %",
            want / 10,
            want % 10,
            tolerance / 10,
            tolerance % 10
        );
    }
    Ok(())
}

/// A `fmt::Write` into a byte buffer (cut at its end).
struct Buf<'a>(&'a mut [u8], usize);

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.1 < self.0.len() {
                self.0[self.1] = b;
                self.1 += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenths() {
        assert_eq!(super::tenths("33.3"), Some(333));
        assert_eq!(super::tenths("25"), Some(250));
        assert_eq!(super::tenths("2.35"), None);
        assert_eq!(super::tenths("x"), None);
    }
}
