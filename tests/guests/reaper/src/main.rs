//! `reaper`: a **privileged** domain 0 (its ELF carries Xen's SUPPORTED_FEATURES note with
//! `XENFEAT_dom0`, as a Linux dom0 kernel does) that stays alive beside other domains, waits
//! for some to end by themselves, shuts others down with `SCHEDOP_remote_shutdown`, and
//! finally powers off, which for the control domain powers the machine off.
//!
//! Command line (all optional):
//! `await=D,D,... reap=D,D,... alive_ms=200 min_ticks=5 after_ticks=3 max_late_ms=100 timeout=60`
//!
//! Every `alive_ms` it wakes from `sti; hlt` on its one-shot timer (VIRQ_TIMER through the
//! callback vector), prints `reaper: alive N` and records how late the timer woke it. At
//! each tick it checks which domains still exist (`EVTCHNOP_status(D, port 0)`: `-ESRCH`
//! = gone) and prints `reaper: domain D gone after T ms` once for each. Once every `await`
//! domain is gone and `min_ticks` ticks have passed, it calls
//! `SCHEDOP_remote_shutdown(D, poweroff)` for each `reap` domain (each must return 0) and
//! waits until they are gone too. After `after_ticks` more ticks it passes if no timer
//! wake-up was more than `max_late_ms` late, and shuts down with poweroff. It fails if
//! it is not the control domain (`XENVER_get_features` lacks `XENFEAT_dom0`) or if the
//! domains are not all gone within `timeout` seconds.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_rt::hypercall::{describe, sched_remote_shutdown, set_timer_op};
use guest_rt::xen_abi::sched::SHUTDOWN_POWEROFF;
use guest_rt::xen_abi::{DomId, Errno};
use guest_rt::{arch, ensure, evtchn, fail, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

guest_rt::dom0_feature_note!();

/// At most this many domains in `await` plus `reap`.
const MAX_DOMAINS: usize = 8;

#[derive(Clone, Copy)]
struct Watched {
    domid: DomId,
    /// To be shut down by us (else: to end by itself).
    reap: bool,
    gone: bool,
}

/// Whether `domid` exists: the control domain may query any domain's port 0; only a domain
/// that does not exist answers `-ESRCH`.
fn exists(domid: DomId) -> bool {
    evtchn::status(domid, 0) != Err(Errno::ESRCH.to_ret())
}

fn domain_list(
    si: &StartInfo,
    key: &str,
    reap: bool,
    out: &mut [Option<Watched>; MAX_DOMAINS],
) -> TestResult {
    let Some(list) = si.arg(key) else {
        return Ok(());
    };
    for d in list.split(',').filter(|s| !s.is_empty()) {
        let Some(domid) = guest_rt::start_info::parse_u64(d).filter(|&d| d < 0x7ff0) else {
            fail!("{key}={list}: {d:?} is not a domain id");
        };
        let Some(slot) = out.iter_mut().find(|s| s.is_none()) else {
            fail!("more than {MAX_DOMAINS} domains in await= and reap=");
        };
        *slot = Some(Watched {
            domid: domid as DomId,
            reap,
            gone: false,
        });
    }
    Ok(())
}

fn test_main(si: &StartInfo) -> TestResult {
    let mut watched = [None; MAX_DOMAINS];
    domain_list(si, "await", false, &mut watched)?;
    domain_list(si, "reap", true, &mut watched)?;
    let alive_ns = si.arg_u64("alive_ms", 200)? * 1_000_000;
    let min_ticks = si.arg_u64("min_ticks", 5)?;
    let after_ticks = si.arg_u64("after_ticks", 3)?;
    let max_late_ns = si.arg_u64("max_late_ms", 100)? * 1_000_000;
    let timeout_ns = si.arg_u64("timeout", 60)? * 1_000_000_000;
    ensure!(alive_ns > 0, "alive_ms=0");

    let me = arch::xen_vcpu_and_domid().map_or(-1, |(_, d)| i32::from(d));
    evtchn::init_with_timer()?;
    let privileged = guest_rt::is_control_domain()?;
    println!("reaper: domain {me}, control domain: {privileged}");
    ensure!(
        privileged,
        "not the control domain: XENVER_get_features lacks XENFEAT_dom0 (dom0 note ignored?)"
    );

    let start = evtchn::now()?;
    let mut next = start + alive_ns;
    let (mut tick, mut max_late, mut reaped, mut after) = (0u64, 0u64, false, 0u64);
    loop {
        let woke = evtchn::sleep_until(next)?;
        let late = woke - next;
        max_late = max_late.max(late);
        tick += 1;
        println!("reaper: alive {tick} ({} us late)", late / 1000);
        // The next tick is one period after the one due (or after now, if we overslept).
        next = (next + alive_ns).max(woke + alive_ns / 2);
        let ms = (woke - start) / 1_000_000;

        for w in watched.iter_mut().flatten() {
            if !w.gone && (!w.reap || reaped) && !exists(w.domid) {
                w.gone = true;
                println!(
                    "reaper: domain {} gone after {ms} ms{}",
                    w.domid,
                    if w.reap { " (remote_shutdown)" } else { "" }
                );
            }
        }
        let awaited_gone = watched.iter().flatten().all(|w| w.reap || w.gone);
        if awaited_gone && !reaped && tick >= min_ticks {
            for w in watched.iter().flatten().filter(|w| w.reap) {
                let rc = sched_remote_shutdown(w.domid, SHUTDOWN_POWEROFF);
                println!(
                    "reaper: remote_shutdown(domain {}, poweroff) returned {}",
                    w.domid,
                    describe(rc)
                );
                ensure!(rc == 0, "remote_shutdown(domain {}) failed", w.domid);
            }
            reaped = true;
        }
        if reaped && watched.iter().flatten().all(|w| w.gone) {
            if after == 0 {
                println!(
                    "reaper: every watched domain is gone; staying alive {after_ticks} more ticks"
                );
            }
            after += 1;
            if after > after_ticks {
                break;
            }
        }
        if woke - start > timeout_ns {
            let mut waiting = [0i32; MAX_DOMAINS];
            for (slot, w) in waiting.iter_mut().zip(watched.iter()) {
                *slot = w.filter(|w| !w.gone).map_or(-1, |w| i32::from(w.domid));
            }
            fail!(
                "after {} s these domains still exist (-1 = none): {waiting:?}",
                timeout_ns / 1_000_000_000
            );
        }
    }
    set_timer_op(0);
    println!(
        "reaper: {tick} alive ticks, timer at most {} us late",
        max_late / 1000
    );
    ensure!(
        max_late <= max_late_ns,
        "a timer wake-up came {} us late (limit {} ms)",
        max_late / 1000,
        max_late_ns / 1_000_000
    );
    Ok(())
}
