//! `console_io` (18): guest output to the hypervisor console.
//!
//! Writes are allowed to every domain (as a Xen debug build does), so test guests and
//! early dom0 output are visible; reads need the console input path (later).

use super::guest_access::{copy_from_guest, copy_to_guest};
use super::Cx;
use super::Reply;
use crate::hvm::{Backend, Vcpu as _};
use crate::schedule::Hv;
use crate::sync::{Level, Lock};
use xen_abi::errno::Errno;
use xen_abi::xen::{CONSOLEIO_READ, CONSOLEIO_WRITE};

/// Largest single write accepted.
pub const WRITE_MAX: u64 = 64 * 1024;
/// Bytes one step of a write handles; the rest runs as a continuation (the same
/// hypercall again with `count` and `buffer` advanced), so one call cannot hold the CPU.
pub const WRITE_STEP: u64 = 512;

/// `HYPERVISOR_console_io(cmd, count, buffer)`.
pub fn console_io<B: Backend>(
    cx: &mut Cx<'_, B>,
    cmd: u64,
    count: u64,
    buffer: u64,
) -> Result<Reply, Errno> {
    match cmd {
        CONSOLEIO_WRITE => {
            if count > WRITE_MAX {
                return Err(Errno::EINVAL);
            }
            let step = count.min(WRITE_STEP);
            let mut chunk = [0u8; WRITE_STEP as usize];
            let chunk = &mut chunk[..step as usize];
            copy_from_guest(cx, buffer, chunk)?;
            let (id, control) = (cx.dom.id, cx.dom.is_control());
            {
                let mut st = cx.dom.st.lock();
                // DomUs are rate-limited; the control domain's console is interactive.
                let (allowed, report) = if control {
                    (step, None)
                } else {
                    st.console_budget.take(crate::time::now().1, step)
                };
                if let Some(n) = report {
                    st.end_console_line(id);
                    log::warn!("d{id}: {n} console bytes dropped (rate limit)");
                }
                let mut out = &chunk[..allowed as usize];
                if st.console_budget.skip_line {
                    // The rest of a line the limit cut.
                    let skip = out.iter().position(|&b| b == b'\n').map_or(out.len(), |i| {
                        st.console_budget.skip_line = false;
                        i + 1
                    });
                    st.console_budget.dropped =
                        st.console_budget.dropped.saturating_add(skip as u64);
                    out = &out[skip..];
                }
                if allowed < step {
                    // The limit bites: only whole lines pass, so fragments of several lines
                    // never join into one. The line in progress is cut (what it gathered
                    // is dropped) and its rest skipped up to its newline.
                    let keep = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    st.console_write(id, control, &out[..keep]);
                    st.console_line.clear();
                    st.console_budget.dropped = st
                        .console_budget
                        .dropped
                        .saturating_add((out.len() - keep) as u64);
                    st.console_budget.skip_line = chunk.last() != Some(&b'\n');
                } else {
                    st.console_write(id, control, out);
                }
            }
            if step == count {
                return Ok(Reply::Value(0));
            }
            // The rest next time: same command (RDI), `count` (RSI) and `buffer` (RDX)
            // advanced; the buffer was readable so far, so it does not wrap.
            let regs = cx.v.hw.regs();
            regs.rsi = count - step;
            regs.rdx = buffer.wrapping_add(step);
            Ok(Reply::Again)
        }
        // Console input goes to the control domain only, as on Xen.
        CONSOLEIO_READ if !cx.dom.is_control() => Err(Errno::EPERM),
        CONSOLEIO_READ => {
            let mut buf = [0u8; 256];
            let n = {
                let mut input = INPUT.lock();
                let n = (count as usize).min(buf.len()).min(input.len());
                for b in buf.iter_mut().take(n) {
                    *b = input.pop_front().unwrap_or(0);
                }
                n
            };
            if let Err(e) = copy_to_guest(cx, buffer, &buf[..n]) {
                // Put the bytes back so a retry gets them.
                let mut input = INPUT.lock();
                for &b in buf[..n].iter().rev() {
                    let _ = input.push_front(b);
                }
                return Err(e);
            }
            Ok(Reply::Value(n as u64))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Console input waiting for dom0 (bounded: the oldest input is kept, the excess dropped).
static INPUT: Lock<arrayvec::ArrayVec<u8, 4096>> =
    Lock::new(Level::ConsoleInput, arrayvec::ArrayVec::new_const());

trait Deque {
    fn pop_front(&mut self) -> Option<u8>;
    fn push_front(&mut self, b: u8) -> Result<(), ()>;
}

impl Deque for arrayvec::ArrayVec<u8, 4096> {
    fn pop_front(&mut self) -> Option<u8> {
        (!self.is_empty()).then(|| self.remove(0))
    }
    fn push_front(&mut self, b: u8) -> Result<(), ()> {
        self.try_insert(0, b).map_err(|_| ())
    }
}

/// Moves console input into the control domain's buffer and raises VIRQ_CONSOLE there;
/// true if any arrived. Without a control domain, input is left in the UART.
pub fn poll_input<B: Backend>(hv: &Hv<B>) -> bool {
    let Some(dom0) = hv.control_domain() else {
        return false;
    };
    let mut got = false;
    while let Some(b) = crate::console::read_byte() {
        if let Some((ctrl_a, byte)) = crate::debugkeys::filter(hv, b) {
            let mut input = INPUT.lock();
            for _ in 0..ctrl_a {
                let _ = input.try_push(0x01);
            }
            let _ = input.try_push(byte);
            got = true;
        }
    }
    if got {
        super::events::raise_virq(hv, &dom0, xen_abi::xen::VIRQ_CONSOLE, 0);
    }
    got
}
