//! Debug keys on the serial console, as Xen has them.
//!
//! Console input goes to dom0. Typing Ctrl-A three times in a row switches it to the
//! hypervisor (and three more back); while the hypervisor has it, each key runs a handler:
//!
//! * `q`: every domain and vCPU: life, pause count, flags, where each vCPU runs, its
//!   runstate, its next timer, what its LAPIC and `vcpu_info` hold pending, its last exits;
//! * `h`: the keys.
//!
//! Ctrl-As fewer than three are held back and given to dom0 with the next other key (while
//! the hypervisor has the input they are dropped), so
//! an application in dom0 still gets a single Ctrl-A. The handlers run in the boot CPU's
//! scheduling loop (host context, no lock held), read what other CPUs share through its
//! locks one at a time, and touch no vCPU's hardware state: a vCPU running elsewhere
//! shows only its shared fields.

use core::sync::atomic::{AtomicU8, Ordering};

/// The switch character (Ctrl-A) and how many in a row switch.
const SWITCH: u8 = 0x01;
const SWITCH_COUNT: u8 = 3;

/// Where console input goes: Ctrl-As seen in a row (not yet passed on), and whether the
/// hypervisor has the input. Only the boot CPU feeds it.
pub struct Switch {
    pending: AtomicU8,
    to_hypervisor: AtomicU8,
}

/// What became of one input byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Give dom0 `ctrl_a` held-back Ctrl-As, then `byte`.
    ToDom0 { ctrl_a: u8, byte: u8 },
    /// A key for the hypervisor.
    Key(u8),
    /// The input switched (true: now to the hypervisor).
    Switched(bool),
    /// Held back (a Ctrl-A that may start a switch).
    Held,
}

impl Switch {
    pub const fn new() -> Switch {
        Switch {
            pending: AtomicU8::new(0),
            to_hypervisor: AtomicU8::new(0),
        }
    }

    /// Feeds one console byte through the switch.
    pub fn feed(&self, byte: u8) -> Input {
        if byte == SWITCH {
            let n = self.pending.load(Ordering::Relaxed) + 1;
            if n < SWITCH_COUNT {
                self.pending.store(n, Ordering::Relaxed);
                return Input::Held;
            }
            self.pending.store(0, Ordering::Relaxed);
            return Input::Switched(self.to_hypervisor.fetch_xor(1, Ordering::Relaxed) == 0);
        }
        let ctrl_a = self.pending.swap(0, Ordering::Relaxed);
        if self.to_hypervisor.load(Ordering::Relaxed) == 0 {
            Input::ToDom0 { ctrl_a, byte }
        } else {
            Input::Key(byte)
        }
    }
}

#[cfg(target_os = "none")]
pub use keys::filter;

#[cfg(target_os = "none")]
mod keys {
    use core::sync::atomic::Ordering;

    use super::{Input, Switch};
    use crate::domain::{vflags, Domain, NO_CPU};
    use crate::hvm::Backend;
    use crate::schedule::Hv;

    static STATE: Switch = Switch::new();

    /// Feeds one console byte through the switch; runs a key's handler when the
    /// hypervisor has the input. Returns what dom0 should get, if anything.
    pub fn filter<B: Backend>(hv: &Hv<B>, byte: u8) -> Option<(u8, u8)> {
        match STATE.feed(byte) {
            Input::ToDom0 { ctrl_a, byte } => return Some((ctrl_a, byte)),
            Input::Held => {}
            Input::Switched(to_hv) => log::info!(
                "*** serial input to {} (type CTRL-a three times to switch input{})",
                if to_hv { "ferrovisor" } else { "dom0" },
                if to_hv {
                    "; 'h' lists the debug keys"
                } else {
                    ""
                }
            ),
            Input::Key(b'q') => dump_domains(hv),
            Input::Key(b'h') => log::info!("debug keys: 'q' domains and vCPUs, 'h' this list"),
            Input::Key(b'\r' | b'\n') => {}
            Input::Key(k) => log::info!("debug key {k:#04x}: no handler ('h' lists the keys)"),
        }
        None
    }

    /// Key `q`.
    pub fn dump_domains<B: Backend>(hv: &Hv<B>) {
        let now = crate::time::now().1;
        log::info!(
            "'q': domains and vCPUs at system time {} ms",
            now / 1_000_000
        );
        for dom in hv.domains.all() {
            dump_domain(&dom, now);
        }
    }

    fn dump_domain<B: Backend>(dom: &Domain<B>, now: u64) {
        let (life, upcalls) = {
            let st = dom.st.lock();
            let upcalls: arrayvec::ArrayVec<bool, 64> = (0..dom.vcpus.len().min(64) as u32)
                .map(|v| crate::xen::shared_info::upcall_pending(&dom.mem, &st, v))
                .collect();
            (st.life, upcalls)
        };
        log::info!(
            "  domain {} ({}): {:?}, paused {}, {} vCPUs, {} hypercalls",
            dom.id,
            dom.name,
            life,
            dom.pause_count.load(Ordering::SeqCst),
            dom.vcpus.len(),
            dom.hypercalls.load(Ordering::Relaxed)
        );
        for v in &dom.vcpus {
            let flags = v.flags.load(Ordering::SeqCst);
            let names = [
                (vflags::BLOCKED, "blocked"),
                (vflags::DOWN, "down"),
                (vflags::POLLING, "polling"),
                (vflags::WAIT_SIPI, "wait-sipi"),
                (vflags::NMI, "nmi"),
            ];
            let mut fl = arrayvec::ArrayString::<64>::new();
            for (bit, name) in names {
                if flags & bit != 0 {
                    let _ = core::fmt::Write::write_fmt(&mut fl, format_args!("{name} "));
                }
            }
            let cpu = v.cpu.load(Ordering::SeqCst);
            let timer = v.next_timer.load(Ordering::SeqCst);
            let state = v.runstate.lock().state;
            log::info!(
                "    vCPU {}: flags [{}] {}, runstate {}, next timer {}, upcall pending {}, IPIs queued {}",
                v.id,
                fl.trim_end(),
                if cpu == NO_CPU {
                    arrayvec::ArrayString::<16>::from("not running").unwrap_or_default()
                } else {
                    let mut s = arrayvec::ArrayString::<16>::new();
                    let _ = core::fmt::Write::write_fmt(&mut s, format_args!("on CPU {cpu}"));
                    s
                },
                ["running", "runnable", "blocked", "offline"]
                    .get(state)
                    .copied()
                    .unwrap_or("?"),
                Relative(timer, now),
                upcalls.get(v.id as usize).copied().unwrap_or(false),
                v.ipi_queued(),
            );
            // A vCPU running elsewhere has its context out of the lock: nothing more.
            let ctx = v.ctx.lock();
            let Some(cx) = ctx.as_ref() else {
                continue;
            };
            log::info!(
                "      LAPIC next interrupt {:?}, timer {}, poll deadline {}, {} exits",
                cx.vlapic.next_interrupt(),
                Relative(cx.vlapic.timer_expiry().unwrap_or(u64::MAX), now),
                Relative(
                    if cx.poll_deadline == 0 {
                        u64::MAX
                    } else {
                        cx.poll_deadline
                    },
                    now
                ),
                cx.exits
            );
            for t in cx.trace.iter() {
                log::info!("      exit {t}");
            }
        }
    }

    /// A deadline shown relative to now.
    struct Relative(u64, u64);

    impl core::fmt::Display for Relative {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let (t, now) = (self.0, self.1);
            if t == u64::MAX {
                f.write_str("none")
            } else if t >= now {
                write!(f, "in {} us", (t - now) / 1000)
            } else {
                write!(f, "{} us ago", (now - t) / 1000)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Input, Switch};

    #[test]
    fn three_ctrl_a_switch_and_others_pass() {
        let s = Switch::new();
        assert_eq!(
            s.feed(b'l'),
            Input::ToDom0 {
                ctrl_a: 0,
                byte: b'l'
            }
        );
        // One or two Ctrl-As are held, then given to dom0 with the next key.
        assert_eq!(s.feed(1), Input::Held);
        assert_eq!(s.feed(1), Input::Held);
        assert_eq!(
            s.feed(b'x'),
            Input::ToDom0 {
                ctrl_a: 2,
                byte: b'x'
            }
        );
        // Three switch; keys then go to the hypervisor; three more switch back.
        for _ in 0..2 {
            assert_eq!(s.feed(1), Input::Held);
        }
        assert_eq!(s.feed(1), Input::Switched(true));
        assert_eq!(s.feed(b'q'), Input::Key(b'q'));
        assert_eq!(s.feed(1), Input::Held);
        assert_eq!(s.feed(b'h'), Input::Key(b'h'));
        for _ in 0..2 {
            assert_eq!(s.feed(1), Input::Held);
        }
        assert_eq!(s.feed(1), Input::Switched(false));
        assert_eq!(
            s.feed(b'e'),
            Input::ToDom0 {
                ctrl_a: 0,
                byte: b'e'
            }
        );
    }
}
