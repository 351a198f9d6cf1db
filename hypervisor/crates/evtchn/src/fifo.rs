//! The FIFO event-channel ABI (Xen's `xen/common/event_fifo.c`, 4.17-era), beside 2-level.
//!
//! A domain uses the 2-level ABI until its first successful `EVTCHNOP_init_control`; from
//! then on every delivery, unmask, clear and pending test of its ports goes through the
//! event words of its event array, and events are queued per notify vCPU and priority:
//!
//! * **Event word** (`u32`, guest memory, 1024 per page): bit 31 PENDING, 30 MASKED,
//!   29 LINKED, 28 BUSY, bits 0..17 LINK (the next port of the queue).
//! * **Control block** (72 bytes per vCPU, guest memory): `ready` (bit `p` = queue `p` has
//!   events), a reserved word, `head[16]` (first port of each queue).
//! * **Tails** are private to the hypervisor; the guest only ever consumes from the head.
//!
//! The guest may rewrite every shared word at any moment. The hypervisor never follows a
//! LINK it reads (it only writes links and heads, and reads words it then updates with
//! compare-and-exchange), every compare-and-exchange loop is bounded (Xen's rule: one try,
//! then set BUSY — which blocks a well-behaved guest's unmask — and at most four more), and
//! a word that cannot be reached (the guest gave its page away) is treated as absent. So a
//! hostile guest can lose or garble its own events but cannot make the hypervisor loop,
//! panic or touch anything but its own pages.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use xen_abi::event_channel::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_LINK_MASK,
    EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN,
};

use crate::{Errno, EventChannels, Kick, Port, SharedBits};

/// Ports of the FIFO ABI (`1 << EVTCHN_FIFO_LINK_BITS` = 131,072).
pub const FIFO_NR_PORTS: u32 = EVTCHN_FIFO_NR_CHANNELS;
/// Event words per event-array page (`PAGE_SIZE / sizeof(event_word_t)`).
pub const FIFO_WORDS_PER_PAGE: u32 = 1024;
/// Most event-array pages (`EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`).
pub const FIFO_MAX_ARRAY_PAGES: usize = (FIFO_NR_PORTS / FIFO_WORDS_PER_PAGE) as usize;
/// Size of `struct evtchn_fifo_control_block`.
pub const FIFO_CONTROL_BLOCK_SIZE: u32 = 72;
/// Priority queues per vCPU.
pub const FIFO_QUEUES: usize = EVTCHN_FIFO_MAX_QUEUES;
/// Offset of `head[0]` in the control block.
pub const FIFO_HEAD_OFFSET: u64 = 8;

const PAGE: u64 = 4096;
const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
/// Extra compare-and-exchange attempts once the tail word is BUSY (Xen: the guest may only
/// set MASKED, clear MASKED, clear PENDING and clear LINKED on a linked word, and BUSY stops
/// a well-behaved one from unmasking, so four attempts suffice for it).
const LINK_RETRIES: u32 = 4;

/// Per-vCPU FIFO state.
#[derive(Clone, Debug, Default)]
struct FifoVcpu {
    /// Guest-physical address of the control block, once `init_control` registered it.
    control: Option<u64>,
    /// Last port linked on each queue (0 = empty), Xen's `evtchn_fifo_queue.tail`.
    tail: [Port; FIFO_QUEUES],
}

/// Per-port FIFO state kept by the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FifoPort {
    /// Queue priority (0 highest .. 15 lowest).
    pub priority: u8,
    /// vCPU and priority of the queue the port was last linked on (Xen's `fifo_lastq`).
    pub last_vcpu: u32,
    pub last_priority: u8,
    /// Raised while its event-array page did not exist yet; re-raised by `expand_array`
    /// (Xen's `evtchn->pending`).
    pub pending: bool,
}

impl FifoPort {
    pub(crate) const INIT: FifoPort = FifoPort {
        priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
        last_vcpu: 0,
        last_priority: 0,
        pending: false,
    };
}

/// One domain's FIFO state (present once the domain switched to the FIFO ABI).
#[derive(Clone, Debug)]
pub(crate) struct Fifo {
    /// GFNs of the event-array pages, in port order.
    array: Vec<u64>,
    vcpus: Vec<FifoVcpu>,
}

impl Fifo {
    fn new(nr_vcpus: u32) -> Box<Fifo> {
        Box::new(Fifo {
            array: Vec::new(),
            vcpus: vec![FifoVcpu::default(); nr_vcpus as usize],
        })
    }

    /// Ports that have an event word (Xen's `num_evtchns`).
    fn num_words(&self) -> u32 {
        self.array.len() as u32 * FIFO_WORDS_PER_PAGE
    }

    /// Guest-physical address of `port`'s event word, if its page exists.
    fn word(&self, port: Port) -> Option<u64> {
        let gfn = *self.array.get((port / FIFO_WORDS_PER_PAGE) as usize)?;
        gfn.checked_mul(PAGE)?
            .checked_add(u64::from(port % FIFO_WORDS_PER_PAGE) * 4)
    }
}

/// The guest address of the control block at `offset` in frame `gfn`.
fn control_gpa(gfn: u64, offset: u32) -> Option<u64> {
    gfn.checked_mul(PAGE)?.checked_add(u64::from(offset))
}

/// Xen's `try_set_link`: `Some(false)` if the tail is no longer LINKED (the queue is empty),
/// `Some(true)` once LINK is written (BUSY cleared in the same exchange), `None` if the word
/// changed under us (`*w` then holds what we found).
fn try_set_link(bits: &mut impl SharedBits, at: u64, w: &mut u32, link: Port) -> Option<bool> {
    if *w & LINKED == 0 {
        return Some(false);
    }
    let old = *w;
    let new = (old & !(BUSY | EVTCHN_FIFO_LINK_MASK)) | (link & EVTCHN_FIFO_LINK_MASK);
    match bits.cmpxchg_u32(at, old, new) {
        Some(found) if found == old => Some(true),
        Some(found) => {
            *w = found;
            None
        }
        // The word vanished: nothing is linked behind it any more.
        None => Some(false),
    }
}

/// Xen's `evtchn_fifo_set_link`: links `link` behind the tail word at `at` iff that word is
/// still LINKED. Returns whether it linked (false: the queue was empty, so the caller makes
/// `link` the head). At most `1 + LINK_RETRIES` exchanges; a guest that keeps changing the
/// word loses the event (reported as linked, as Xen does).
fn set_link(bits: &mut impl SharedBits, at: u64, link: Port) -> bool {
    let Some(mut w) = bits.load_u32(at) else {
        return false;
    };
    if let Some(r) = try_set_link(bits, at, &mut w, link) {
        return r;
    }
    // Lock the word against a well-behaved guest's unmask.
    if bits.fetch_or_u32(at, BUSY).is_none() {
        return false;
    }
    let Some(mut w) = bits.load_u32(at) else {
        return false;
    };
    for _ in 0..LINK_RETRIES {
        if let Some(r) = try_set_link(bits, at, &mut w, link) {
            if !r {
                bits.fetch_and_u32(at, !BUSY);
            }
            return r;
        }
    }
    bits.fetch_and_u32(at, !BUSY);
    true
}

impl EventChannels {
    /// Whether this domain uses the FIFO ABI (a control block was registered).
    pub fn is_fifo(&self) -> bool {
        self.fifo.is_some()
    }

    /// Most ports of the current ABI (Xen's `max_evtchns`): 4096 for 2-level, 131,072 for
    /// FIFO.
    pub fn max_ports(&self) -> u32 {
        if self.is_fifo() {
            FIFO_NR_PORTS
        } else {
            crate::NR_PORTS
        }
    }

    /// Ports that have an event word (FIFO), 0 for a 2-level domain.
    pub fn fifo_words(&self) -> u32 {
        self.fifo.as_ref().map_or(0, |f| f.num_words())
    }

    /// Guest address of `vcpu`'s control block, if registered.
    pub fn fifo_control_block(&self, vcpu: u32) -> Option<u64> {
        self.fifo.as_ref()?.vcpus.get(vcpu as usize)?.control
    }

    /// The hypervisor's tail of queue `priority` of `vcpu` (0 = empty), for tests.
    pub fn fifo_tail(&self, vcpu: u32, priority: u32) -> Option<Port> {
        let f = self.fifo.as_ref()?;
        f.vcpus
            .get(vcpu as usize)?
            .tail
            .get(priority as usize)
            .copied()
    }

    /// Guest address of `port`'s event word, if the domain is FIFO and the page exists.
    pub fn fifo_word_gpa(&self, port: Port) -> Option<u64> {
        self.fifo.as_ref()?.word(port)
    }

    /// The FIFO priority of `port` (`None` if invalid).
    pub fn priority(&self, port: Port) -> Option<u32> {
        self.chans
            .get(port as usize)
            .map(|c| u32::from(c.fifo.priority))
    }

    /// `EVTCHNOP_init_control` by this domain; returns `link_bits` (17).
    ///
    /// Xen's order: `-ENOENT` if `vcpu` is not a vCPU of the domain; `-EINVAL` if the block
    /// would cross the page (`offset > 4096 - 72`); `-EINVAL` unless `offset` is 8-byte
    /// aligned; `-EINVAL` if that vCPU already has a control block; `-EINVAL` unless
    /// `control_gfn` is a writable RAM page of the domain ([`SharedBits::frame_ok`]).
    /// The first success switches the domain to FIFO: ports already bound get the default
    /// priority and keep their 2-level pending state, to be raised once their event-array
    /// page is added. A failed first call leaves the domain on 2-level.
    pub fn init_control(
        &mut self,
        vcpu: u32,
        control_gfn: u64,
        offset: u32,
        bits: &mut impl SharedBits,
    ) -> Result<u8, Errno> {
        if vcpu >= self.max_vcpus() {
            return Err(Errno::ENOENT);
        }
        if offset > PAGE as u32 - FIFO_CONTROL_BLOCK_SIZE || !offset.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        if self.fifo_control_block(vcpu).is_some() {
            return Err(Errno::EINVAL);
        }
        let gpa = control_gpa(control_gfn, offset).ok_or(Errno::EINVAL)?;
        if !bits.frame_ok(control_gfn) {
            return Err(Errno::EINVAL);
        }
        if self.fifo.is_none() {
            let mut f = Fifo::new(self.max_vcpus());
            f.vcpus[vcpu as usize].control = Some(gpa);
            // Xen's setup_ports: bound ports keep their 2-level pending state and get the
            // default priority.
            for (p, c) in self.chans.iter_mut().enumerate().skip(1) {
                let pending =
                    c.state.is_open() && (p as u32) < crate::NR_PORTS && bits.is_pending(p as Port);
                c.fifo = FifoPort {
                    priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
                    pending,
                    ..c.fifo
                };
            }
            self.fifo = Some(f);
        } else if let Some(f) = self.fifo.as_mut() {
            f.vcpus[vcpu as usize].control = Some(gpa);
        }
        Ok(EVTCHN_FIFO_LINK_BITS as u8)
    }

    /// `EVTCHNOP_expand_array`: adds the next event-array page (1024 ports).
    ///
    /// `-EOPNOTSUPP` for a 2-level domain; `-ENOSPC` once 128 pages exist; `-EINVAL` unless
    /// `array_gfn` is a writable RAM page of the domain. Ports of the new page raised while it
    /// was missing are raised now; the kick is for this domain.
    pub fn expand_array(
        &mut self,
        array_gfn: u64,
        bits: &mut impl SharedBits,
    ) -> Result<Kick, Errno> {
        let f = self.fifo.as_mut().ok_or(Errno::EOPNOTSUPP)?;
        if f.array.len() >= FIFO_MAX_ARRAY_PAGES {
            return Err(Errno::ENOSPC);
        }
        if array_gfn.checked_mul(PAGE).is_none() || !bits.frame_ok(array_gfn) {
            return Err(Errno::EINVAL);
        }
        let valid = self.chans.len() as u32;
        let first = f.num_words();
        f.array.push(array_gfn);
        let end = f.num_words().min(valid);
        let mut kick = Kick::NONE;
        for port in first..end {
            let c = &mut self.chans[port as usize];
            if c.fifo.pending {
                c.fifo.pending = false;
                kick = kick.merge(self.fifo_set_pending(port, bits));
            }
        }
        Ok(kick)
    }

    /// `EVTCHNOP_set_priority`: `-EINVAL` for an invalid port, `-ENOSYS` for a 2-level
    /// domain (its port ops have no `set_priority`), `-EINVAL` for a priority above 15.
    /// Applies to later events; one already queued stays where it is.
    pub fn set_priority(&mut self, port: Port, priority: u32) -> Result<(), Errno> {
        let c = self.chans.get_mut(port as usize).ok_or(Errno::EINVAL)?;
        if self.fifo.is_none() {
            return Err(Errno::ENOSYS);
        }
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        c.fifo.priority = priority as u8;
        Ok(())
    }

    /// The end of `EVTCHNOP_reset` (Xen's `evtchn_reset`), after every port was closed:
    /// `-EAGAIN` if a port was bound again meanwhile; otherwise a FIFO domain goes back to
    /// the 2-level ABI (control blocks and event array forgotten, the valid range back to one
    /// bucket, as Xen does).
    pub fn reset_abi(&mut self) -> Result<(), Errno> {
        if self.in_use() > 0 {
            return Err(Errno::EAGAIN);
        }
        if self.fifo.take().is_some() {
            self.chans.truncate(crate::PORTS_PER_BUCKET as usize);
            self.first_free = self.first_free.min(crate::PORTS_PER_BUCKET);
            for c in self.chans.iter_mut() {
                c.fifo = FifoPort::INIT;
            }
        }
        Ok(())
    }

    /// Xen's `evtchn_fifo_set_pending` for `port` on its notify vCPU.
    pub(crate) fn fifo_set_pending(&mut self, port: Port, bits: &mut impl SharedBits) -> Kick {
        let Some(c) = self.chans.get(port as usize).copied() else {
            return Kick::NONE;
        };
        let Some(f) = self.fifo.as_mut() else {
            return Kick::NONE;
        };
        let Some(word) = f.word(port) else {
            // No event word yet: remember it for expand_array.
            self.chans[port as usize].fifo.pending = true;
            return Kick::NONE;
        };
        let v = c.notify as usize;
        let prio = usize::from(c.fifo.priority).min(FIFO_QUEUES - 1);
        let Some(cb) = f.vcpus.get(v).and_then(|q| q.control) else {
            // The guest must not unmask before registering the block: drop the event.
            return Kick::NONE;
        };
        let check_pollers = bits
            .fetch_or_u32(word, PENDING)
            .is_some_and(|o| o & PENDING == 0);
        let mut linked = true;
        let unmasked = bits.load_u32(word).is_some_and(|w| w & MASKED == 0);
        if unmasked
            && bits
                .fetch_or_u32(word, LINKED)
                .is_some_and(|o| o & LINKED == 0)
        {
            // If it was the tail of the queue it was last on, that queue is now empty.
            let (lv, lp) = (c.fifo.last_vcpu as usize, usize::from(c.fifo.last_priority));
            if let Some(t) = f.vcpus.get_mut(lv).and_then(|q| q.tail.get_mut(lp)) {
                if *t == port {
                    *t = 0;
                }
            }
            let cp = &mut self.chans[port as usize].fifo;
            cp.last_vcpu = v as u32;
            cp.last_priority = prio as u8;
            linked = false;
            let tail = f.vcpus[v].tail[prio];
            if tail != 0 {
                if let Some(tw) = f.word(tail) {
                    linked = set_link(bits, tw, port);
                }
            }
            if !linked {
                bits.store_u32(cb + FIFO_HEAD_OFFSET + 4 * prio as u64, port);
            }
            f.vcpus[v].tail[prio] = port;
        }
        let mut kick = Kick::NONE;
        if !linked
            && bits
                .fetch_or_u32(cb, 1 << prio)
                .is_some_and(|o| o & (1 << prio) == 0)
            && !bits.test_and_set_upcall_pending(v as u32)
        {
            kick.upcalls.insert(v as u32);
        }
        if check_pollers {
            kick.pollers = self.wake_pollers(port);
        }
        kick
    }

    /// Xen's `evtchn_fifo_unmask`: clears MASKED; if PENDING, raises the port again.
    pub(crate) fn fifo_unmask(&mut self, port: Port, bits: &mut impl SharedBits) -> Kick {
        let Some(word) = self.fifo_word_gpa(port) else {
            return Kick::NONE;
        };
        bits.fetch_and_u32(word, !MASKED);
        if bits.load_u32(word).is_some_and(|w| w & PENDING != 0) {
            self.fifo_set_pending(port, bits)
        } else {
            Kick::NONE
        }
    }

    /// Xen's `evtchn_fifo_clear_pending`: only PENDING (the guest unlinks it itself).
    pub(crate) fn fifo_clear_pending(&mut self, port: Port, bits: &mut impl SharedBits) {
        if let Some(c) = self.chans.get_mut(port as usize) {
            c.fifo.pending = false;
        }
        if let Some(word) = self.fifo_word_gpa(port) {
            bits.fetch_and_u32(word, !PENDING);
        }
    }

    /// Xen's `evtchn_fifo_is_busy`: the port's word is LINKED (false for 2-level).
    pub(crate) fn fifo_is_busy(&self, port: Port, bits: &impl SharedBits) -> bool {
        self.fifo_word_gpa(port)
            .and_then(|w| bits.load_u32(w))
            .is_some_and(|w| w & LINKED != 0)
    }

    /// Xen's `evtchn_fifo_is_pending`.
    pub(crate) fn fifo_is_pending(&self, port: Port, bits: &impl SharedBits) -> bool {
        self.fifo_word_gpa(port)
            .and_then(|w| bits.load_u32(w))
            .is_some_and(|w| w & PENDING != 0)
    }
}
