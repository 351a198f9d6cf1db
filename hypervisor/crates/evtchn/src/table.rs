//! One domain's port table and the single-domain sub-ops.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::fifo::{Fifo, FifoPort, FIFO_NR_PORTS};

use xen_abi::event_channel::EvtchnStatus;
use xen_abi::xen::{virq_is_per_vcpu, NR_VIRQS};

use crate::{
    Caller, DomId, Errno, Kick, Port, SharedBits, VcpuMask, BITS_PER_WORD, MAX_POLL_PORTS,
    MAX_VCPUS, NR_PORTS, PORTS_PER_BUCKET,
};

/// State of a port (Xen's `ECS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not in use (`ECS_FREE`).
    Free,
    /// Port 0, never allocated (`ECS_RESERVED`); reported as closed.
    Reserved,
    /// Allocated, waiting for `remote_dom` to bind (`ECS_UNBOUND`).
    Unbound {
        /// The domain allowed to bind to it.
        remote_dom: DomId,
    },
    /// Connected to `remote_port` of `remote_dom` (`ECS_INTERDOMAIN`); may be this domain.
    Interdomain {
        /// The peer domain.
        remote_dom: DomId,
        /// The peer's port.
        remote_port: Port,
    },
    /// Bound to a VIRQ (`ECS_VIRQ`). Per-vCPU VIRQs are bound on the port's notify vCPU;
    /// global ones are registered on vCPU 0 and delivered to the notify vCPU.
    Virq {
        /// `VIRQ_*` number.
        virq: u32,
    },
    /// An IPI port (`ECS_IPI`); delivered to its notify vCPU.
    Ipi,
}

impl State {
    /// Whether the port counts as in use (anything but free/reserved).
    pub fn is_open(&self) -> bool {
        !matches!(self, State::Free | State::Reserved)
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Chan {
    pub(crate) state: State,
    pub(crate) notify: u32,
    pub(crate) fifo: FifoPort,
}

const FREE: Chan = Chan {
    state: State::Free,
    notify: 0,
    fifo: FifoPort::INIT,
};

/// Per-domain limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of vCPUs (ids `0..max_vcpus`), `1..=MAX_VCPUS`. Any id below it is valid for
    /// binding, online or not (doc §4.4).
    pub max_vcpus: u32,
    /// Highest port number that may be allocated (Xen's `max_evtchn_port`; libxl's domU
    /// default is 1023, dom0's is unlimited = `FIFO_NR_PORTS - 1`). Allocation above it, or
    /// at or above the ABI's port count (4096 for 2-level, 131,072 for FIFO), fails with
    /// `-ENOSPC`.
    pub max_port: Port,
}

impl Config {
    /// `max_vcpus` vCPUs, no port limit but the ABI's.
    pub const fn new(max_vcpus: u32) -> Self {
        Config {
            max_vcpus,
            max_port: FIFO_NR_PORTS - 1,
        }
    }

    /// Same, with a port limit.
    pub const fn with_max_port(mut self, max_port: Port) -> Self {
        self.max_port = max_port;
        self
    }
}

/// What [`EventChannels::send`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Delivered inside this domain (IPI, or loopback interdomain); kick these vCPUs.
    Local(Kick),
    /// Interdomain to another domain: lock `dom` and call
    /// [`EventChannels::deliver_interdomain`]`(port, <this domid>, from_port, ..)` on its
    /// table, then kick what that returns (in `dom`).
    Remote {
        /// The peer domain.
        dom: DomId,
        /// The peer's port to set pending.
        port: Port,
        /// The sending (local) port.
        from_port: Port,
    },
    /// Unbound port: the notification is silently dropped (Xen: `ECS_UNBOUND`).
    Dropped,
}

/// Result of [`EventChannels::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// A listed port is already pending: `SCHEDOP_poll` returns 0 at once.
    Ready,
    /// The vCPU is registered as a poller: block it until a [`Kick`] names it in `pollers`
    /// (or `upcalls`), or until the timeout; then call [`EventChannels::poll_cancel`] (a kick
    /// in `pollers` has already deregistered it) and return 0.
    Blocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollTarget {
    /// `nr_ports == 1`: woken by this port only.
    Port(Port),
    /// Several (or zero) ports: woken by any port of the domain (Xen's `poll_evtchn = -1`).
    Any,
}

/// One domain's event channels.
#[derive(Clone, Debug)]
pub struct EventChannels {
    domid: DomId,
    cfg: Config,
    /// Valid ports; the length is a multiple of [`PORTS_PER_BUCKET`] and never shrinks.
    pub(crate) chans: Vec<Chan>,
    in_use: u32,
    /// `virq_to_evtchn[vcpu][virq]`, 0 = unbound. Global VIRQs use vCPU 0's row.
    virq_to_port: Vec<[Port; NR_VIRQS as usize]>,
    poll: Vec<Option<PollTarget>>,
    polling: VcpuMask,
    pub(crate) dying: bool,
    /// Every port in `1..first_free` is in use (a search hint; Xen scans from 0).
    pub(crate) first_free: u32,
    /// FIFO ABI state, once the domain switched to it.
    pub(crate) fifo: Option<Box<Fifo>>,
}

impl EventChannels {
    /// A fresh table for domain `domid`: port 0 reserved, nothing else allocated.
    /// `-EINVAL` if `max_vcpus` is 0 or above [`MAX_VCPUS`].
    pub fn new(domid: DomId, cfg: Config) -> Result<Self, Errno> {
        if cfg.max_vcpus == 0 || cfg.max_vcpus > MAX_VCPUS {
            return Err(Errno::EINVAL);
        }
        let mut chans = vec![FREE; PORTS_PER_BUCKET as usize];
        chans[0].state = State::Reserved;
        Ok(EventChannels {
            domid,
            cfg,
            chans,
            in_use: 0,
            virq_to_port: vec![[0; NR_VIRQS as usize]; cfg.max_vcpus as usize],
            poll: vec![None; cfg.max_vcpus as usize],
            polling: VcpuMask::EMPTY,
            dying: false,
            first_free: 1,
            fifo: None,
        })
    }

    // -----------------------------------------------------------------------------------
    // Introspection and accounting.
    // -----------------------------------------------------------------------------------

    /// The domain this table belongs to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// Number of vCPUs.
    pub fn max_vcpus(&self) -> u32 {
        self.cfg.max_vcpus
    }

    /// Ports in use (every state but free/reserved; Xen's `active_evtchns`).
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Changes the highest allocatable port (ports already above it stay open).
    pub fn set_max_port(&mut self, max_port: Port) {
        self.cfg.max_port = max_port.min(FIFO_NR_PORTS - 1);
    }

    /// Marks the domain dying: further allocations fail with `-EINVAL` (Xen's
    /// `get_free_port` on `d->is_dying`).
    pub fn set_dying(&mut self) {
        self.dying = true;
    }

    /// End of the valid port range (Xen's `valid_evtchns`).
    pub fn valid_ports(&self) -> u32 {
        self.chans.len() as u32
    }

    /// Whether `port` is in the valid range (Xen's `port_is_valid`).
    pub fn is_valid(&self, port: Port) -> bool {
        port < self.valid_ports()
    }

    /// State of `port`, `None` if it is not valid.
    pub fn state(&self, port: Port) -> Option<State> {
        self.chans.get(port as usize).map(|c| c.state)
    }

    /// Notify vCPU of `port`, `None` if it is not valid.
    pub fn notify_vcpu(&self, port: Port) -> Option<u32> {
        self.chans.get(port as usize).map(|c| c.notify)
    }

    /// The port `virq` is bound to on `vcpu` (global VIRQs: look on vCPU 0), if any.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<Port> {
        let row = self.virq_to_port.get(vcpu as usize)?;
        match row.get(virq as usize) {
            Some(&p) if p != 0 => Some(p),
            _ => None,
        }
    }

    /// The open ports, ascending.
    pub fn open_ports(&self) -> impl Iterator<Item = (Port, State)> + '_ {
        self.chans
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state.is_open())
            .map(|(p, c)| (p as Port, c.state))
    }

    /// The peer domain `close(port)` needs locked, if the port is interdomain to **another**
    /// domain. Look it up, lock both domains in order, then call [`crate::close`].
    pub fn peer_of(&self, port: Port) -> Option<DomId> {
        match self.state(port)? {
            State::Interdomain { remote_dom, .. } if remote_dom != self.domid => Some(remote_dom),
            _ => None,
        }
    }

    fn vcpu_ok(&self, vcpu: u32) -> bool {
        vcpu < self.cfg.max_vcpus
    }

    // -----------------------------------------------------------------------------------
    // Allocation.
    // -----------------------------------------------------------------------------------

    /// Xen's `get_free_port`: the lowest free port, growing the valid range by buckets.
    /// A free port whose FIFO event word is still LINKED (the guest has not consumed it) is
    /// skipped, as Xen's `evtchn_allocate_port` skips busy ports.
    /// Does not mark it used. `-EINVAL` if dying, `-ENOSPC` if none is left at or below
    /// `max_port`.
    pub(crate) fn get_free_port(&mut self, bits: &impl SharedBits) -> Result<Port, Errno> {
        if self.dying {
            return Err(Errno::EINVAL);
        }
        let limit = self.cfg.max_port.min(self.max_ports() - 1);
        let valid = self.valid_ports();
        let mut busy = None;
        for p in self.first_free.max(1)..valid.min(limit + 1) {
            if self.chans[p as usize].state != State::Free {
                continue;
            }
            if self.fifo_is_busy(p, bits) {
                busy.get_or_insert(p);
                continue;
            }
            // A busy port may be consumed later: the hint stays at or below it.
            self.first_free = busy.unwrap_or(p);
            return Ok(p);
        }
        if let Some(b) = busy {
            self.first_free = b;
        }
        if valid > limit {
            return Err(Errno::ENOSPC);
        }
        let new_len = valid + PORTS_PER_BUCKET;
        self.chans.resize(new_len as usize, FREE);
        Ok(valid)
    }

    /// Marks a port returned by `get_free_port` as used.
    pub(crate) fn occupy(&mut self, port: Port, state: State, notify: u32) {
        let c = &mut self.chans[port as usize];
        debug_assert_eq!(c.state, State::Free);
        // Xen's evtchn_port_init: a fresh binding gets the default FIFO priority.
        c.state = state;
        c.notify = notify;
        c.fifo.priority = FifoPort::INIT.priority;
        c.fifo.pending = false;
        self.in_use += 1;
        if port == self.first_free {
            self.first_free += 1;
        }
    }

    /// Xen's `evtchn_free`: clears pending, resets the notify vCPU to 0.
    pub(crate) fn free(&mut self, port: Port, bits: &mut impl SharedBits) {
        self.clear_pending(port, bits);
        let c = &mut self.chans[port as usize];
        debug_assert!(c.state.is_open());
        // The queue it was last linked on is remembered (Xen keeps `fifo_lastq`).
        c.state = State::Free;
        c.notify = 0;
        self.first_free = self.first_free.min(port);
        self.in_use -= 1;
    }

    pub(crate) fn set_state(&mut self, port: Port, state: State) {
        self.chans[port as usize].state = state;
    }

    /// Unbinds a VIRQ port from the VIRQ map (part of closing it).
    pub(crate) fn unmap_virq(&mut self, port: Port, virq: u32) {
        let vcpu = if virq_is_per_vcpu(virq) {
            self.chans[port as usize].notify
        } else {
            0
        };
        let slot = &mut self.virq_to_port[vcpu as usize][virq as usize];
        debug_assert_eq!(*slot, port);
        *slot = 0;
    }

    // -----------------------------------------------------------------------------------
    // Sub-ops.
    // -----------------------------------------------------------------------------------

    /// `EVTCHNOP_alloc_unbound` on this (the target) domain.
    ///
    /// The caller first resolves `dom` (`DOMID_SELF` → caller) and looks the domain up
    /// (`-ESRCH` if absent). Then, as Xen: `-EINVAL` if dying / `-ENOSPC` if full
    /// (`get_free_port` runs first), then `-EPERM` unless the target is the caller or the caller
    /// is privileged (`xsm_evtchn_unbound`, `XSM_TARGET`). `remote_dom == DOMID_SELF` means the
    /// **caller** (not the target). Xen does not check that `remote_dom` exists.
    pub fn alloc_unbound(
        &mut self,
        caller: Caller,
        remote_dom: DomId,
        bits: &impl SharedBits,
    ) -> Result<Port, Errno> {
        let port = self.get_free_port(bits)?;
        caller.check_target(self.domid)?;
        let remote_dom = caller.resolve(remote_dom);
        self.occupy(port, State::Unbound { remote_dom }, 0);
        Ok(port)
    }

    /// `EVTCHNOP_bind_virq` (caller = this domain).
    ///
    /// Xen's order: `-EINVAL` if `virq >= NR_VIRQS`; `-EINVAL` if the VIRQ is global and
    /// `vcpu != 0`; `-ENOENT` if `vcpu` is not a vCPU of the domain; `-EEXIST` if already
    /// bound on that vCPU; then `get_free_port` errors (`-ENOSPC`, `-EINVAL` if dying).
    pub fn bind_virq(
        &mut self,
        virq: u32,
        vcpu: u32,
        bits: &impl SharedBits,
    ) -> Result<Port, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if !virq_is_per_vcpu(virq) && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        if self.virq_to_port[vcpu as usize][virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = self.get_free_port(bits)?;
        self.occupy(port, State::Virq { virq }, vcpu);
        self.virq_to_port[vcpu as usize][virq as usize] = port;
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`: `-ENOENT` for a bad vCPU, then `get_free_port` errors.
    pub fn bind_ipi(&mut self, vcpu: u32, bits: &impl SharedBits) -> Result<Port, Errno> {
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = self.get_free_port(bits)?;
        self.occupy(port, State::Ipi, vcpu);
        Ok(port)
    }

    /// `EVTCHNOP_bind_pirq`: physical IRQs are not offered to PVH guests here. Always
    /// `-EINVAL`, Xen's answer for `pirq >= d->nr_pirqs` with `nr_pirqs = 0`.
    pub fn bind_pirq(&mut self, _pirq: u32, _flags: u32) -> Result<Port, Errno> {
        Err(Errno::EINVAL)
    }

    /// `EVTCHNOP_status` on this (the target) domain; fills the OUT fields of `out`.
    ///
    /// The caller resolves/looks up `dom` (`-ESRCH`). Then `-EINVAL` if the port is not valid,
    /// then `-EPERM` unless the target is the caller or the caller is privileged
    /// (`xsm_evtchn_status`, `XSM_TARGET`). Free and reserved ports read as closed.
    pub fn status(&self, caller: Caller, port: Port, out: &mut EvtchnStatus) -> Result<(), Errno> {
        let c = *self.chans.get(port as usize).ok_or(Errno::EINVAL)?;
        caller.check_target(self.domid)?;
        match c.state {
            State::Free | State::Reserved => out.set_closed(c.notify),
            State::Unbound { remote_dom } => out.set_unbound(c.notify, remote_dom),
            State::Interdomain {
                remote_dom,
                remote_port,
            } => out.set_interdomain(c.notify, remote_dom, remote_port),
            State::Virq { virq } => out.set_virq(c.notify, virq),
            State::Ipi => out.set_ipi(c.notify),
        }
        Ok(())
    }

    /// `EVTCHNOP_bind_vcpu`: change the notify vCPU.
    ///
    /// Xen's order: `-ENOENT` for a bad vCPU, `-EINVAL` for an invalid port; then allowed
    /// for unbound, interdomain and **global** VIRQ ports; `-EINVAL` for per-vCPU VIRQs, IPIs
    /// and free/reserved ports. Pending state is not migrated (2-level Xen does not either).
    pub fn bind_vcpu(&mut self, port: Port, vcpu: u32) -> Result<(), Errno> {
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        let c = self.chans.get_mut(port as usize).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Virq { virq } if !virq_is_per_vcpu(virq) => c.notify = vcpu,
            State::Unbound { .. } | State::Interdomain { .. } => c.notify = vcpu,
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// `EVTCHNOP_unmask` (Xen's `evtchn_2l_unmask`): `-EINVAL` for an invalid port (any
    /// valid port is accepted, even a free one). Atomically clears the mask bit; if it **was
    /// set** and the port is pending, sets the word's bit in the notify vCPU's selector and,
    /// if that was clear, `upcall_pending` — the returned kick names that vCPU.
    /// A FIFO domain uses Xen's `evtchn_fifo_unmask` instead: clear MASKED, and if PENDING
    /// raise the port again (linking it on its queue).
    pub fn unmask(&mut self, port: Port, bits: &mut impl SharedBits) -> Result<Kick, Errno> {
        let c = *self.chans.get(port as usize).ok_or(Errno::EINVAL)?;
        if self.is_fifo() {
            return Ok(self.fifo_unmask(port, bits));
        }
        let mut kick = Kick::NONE;
        if bits.test_and_clear_mask(port)
            && bits.is_pending(port)
            && !bits.test_and_set_pending_sel(c.notify, port / BITS_PER_WORD)
            && !bits.test_and_set_upcall_pending(c.notify)
        {
            kick.upcalls.insert(c.notify);
        }
        Ok(kick)
    }

    /// `EVTCHNOP_send` (caller = this domain).
    ///
    /// `-EINVAL` for an invalid port, a free/reserved port, a VIRQ port (Xen's `default:`).
    /// Unbound: dropped, returns 0. IPI: sets this port pending. Interdomain: loopback is
    /// delivered here; otherwise [`SendOutcome::Remote`] tells the caller where to deliver.
    pub fn send(&mut self, port: Port, bits: &mut impl SharedBits) -> Result<SendOutcome, Errno> {
        let c = *self.chans.get(port as usize).ok_or(Errno::EINVAL)?;
        match c.state {
            State::Interdomain {
                remote_dom,
                remote_port,
            } => {
                if remote_dom == self.domid {
                    Ok(SendOutcome::Local(self.set_pending(remote_port, bits)))
                } else {
                    Ok(SendOutcome::Remote {
                        dom: remote_dom,
                        port: remote_port,
                        from_port: port,
                    })
                }
            }
            State::Ipi => Ok(SendOutcome::Local(self.set_pending(port, bits))),
            State::Unbound { .. } => Ok(SendOutcome::Dropped),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Second half of an interdomain send, on the **receiving** domain's table: sets `port`
    /// pending if it is still connected to `(from_dom, from_port)`. If the channel was closed
    /// or re-bound in between (the caller dropped the sender's lock), the notification is
    /// dropped, as if the send had happened after the close.
    pub fn deliver_interdomain(
        &mut self,
        port: Port,
        from_dom: DomId,
        from_port: Port,
        bits: &mut impl SharedBits,
    ) -> Kick {
        match self.state(port) {
            Some(State::Interdomain {
                remote_dom,
                remote_port,
            }) if remote_dom == from_dom && remote_port == from_port => {
                self.set_pending(port, bits)
            }
            _ => Kick::NONE,
        }
    }

    // -----------------------------------------------------------------------------------
    // Delivery.
    // -----------------------------------------------------------------------------------

    /// Raises `port` for its notify vCPU (Xen's `evtchn_2l_set_pending`), in this order:
    /// 1. test-and-set `pending[port]`; if it was clear and `mask[port]` is clear,
    ///    test-and-set bit `port / 64` of the notify vCPU's `evtchn_pending_sel`; if that was
    ///    clear, test-and-set its `evtchn_upcall_pending`; if that was clear, the vCPU is in
    ///    [`Kick::upcalls`].
    /// 2. Pollers of this port (or of "any port") are woken **whether or not the port is
    ///    masked** and are deregistered ([`Kick::pollers`]). Xen skips this step when the
    ///    pending bit was already set; doing it anyway only adds harmless spurious wake-ups
    ///    (doc §7 step 3 says "in every case").
    ///
    /// Invalid ports are ignored (empty kick). Free ports are raised like any other: the
    /// hypervisor's own callers only raise ports they own.
    ///
    /// A FIFO domain uses Xen's `evtchn_fifo_set_pending` instead (see the `fifo` module):
    /// PENDING, then, if not MASKED and not already LINKED, the port is linked at the tail of
    /// its notify vCPU's queue of its priority (or made the head of an empty queue, setting the
    /// queue's READY bit and then `evtchn_upcall_pending`); pollers are woken only when
    /// PENDING was clear, as in Xen.
    pub fn set_pending(&mut self, port: Port, bits: &mut impl SharedBits) -> Kick {
        let Some(c) = self.chans.get(port as usize).copied() else {
            return Kick::NONE;
        };
        if self.is_fifo() {
            return self.fifo_set_pending(port, bits);
        }
        let mut kick = Kick::NONE;
        if !bits.test_and_set_pending(port)
            && !bits.is_masked(port)
            && !bits.test_and_set_pending_sel(c.notify, port / BITS_PER_WORD)
            && !bits.test_and_set_upcall_pending(c.notify)
        {
            kick.upcalls.insert(c.notify);
        }
        kick.pollers = self.wake_pollers(port);
        kick
    }

    /// Delivers `virq` (Xen's `send_guest_vcpu_virq` / `send_guest_global_virq`): a per-vCPU
    /// VIRQ goes to the port bound on `vcpu`; a global VIRQ (`vcpu` ignored) to the port bound
    /// on vCPU 0, raised for that port's notify vCPU (which `bind_vcpu` may have moved).
    /// Nothing happens (empty kick) if it is not bound or the arguments are out of range.
    pub fn raise_virq(&mut self, virq: u32, vcpu: u32, bits: &mut impl SharedBits) -> Kick {
        if virq >= NR_VIRQS {
            return Kick::NONE;
        }
        let row = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
        match self.virq_port(virq, row) {
            Some(port) => self.set_pending(port, bits),
            None => Kick::NONE,
        }
    }

    // -----------------------------------------------------------------------------------
    // SCHEDOP_poll.
    // -----------------------------------------------------------------------------------

    /// `SCHEDOP_poll` for `vcpu` on `ports` (already copied from the guest).
    ///
    /// Before calling, the caller returns 0 at once if the vCPU has a deliverable upcall
    /// pending (Xen's `local_events_need_delivery`). Then, as Xen's `do_poll`: `-EINVAL` if
    /// more than 128 ports; ports are checked in order: an invalid port is `-EINVAL`, a
    /// pending one (masked or not) makes the poll [`PollOutcome::Ready`]. Otherwise the vCPU
    /// is registered: with exactly one port it is woken by that port only, otherwise by any
    /// port of the domain. `-ENOENT` if `vcpu` is not a vCPU of the domain.
    pub fn poll(
        &mut self,
        vcpu: u32,
        ports: &[Port],
        bits: &impl SharedBits,
    ) -> Result<PollOutcome, Errno> {
        if ports.len() > MAX_POLL_PORTS {
            return Err(Errno::EINVAL);
        }
        if !self.vcpu_ok(vcpu) {
            return Err(Errno::ENOENT);
        }
        for &p in ports {
            if !self.is_valid(p) {
                return Err(Errno::EINVAL);
            }
            if self.is_pending(p, bits) {
                return Ok(PollOutcome::Ready);
            }
        }
        self.poll[vcpu as usize] = Some(match ports {
            [p] => PollTarget::Port(*p),
            _ => PollTarget::Any,
        });
        self.polling.insert(vcpu);
        Ok(PollOutcome::Blocked)
    }

    /// Ends `vcpu`'s poll (timeout, other wake-up); idempotent.
    pub fn poll_cancel(&mut self, vcpu: u32) {
        if let Some(slot) = self.poll.get_mut(vcpu as usize) {
            *slot = None;
        }
        self.polling.remove(vcpu);
    }

    /// Whether `vcpu` is registered as a poller.
    pub fn is_polling(&self, vcpu: u32) -> bool {
        self.polling.contains(vcpu)
    }

    /// Whether `port` is pending in the domain's ABI (2-level bit or FIFO PENDING).
    pub fn is_pending(&self, port: Port, bits: &impl SharedBits) -> bool {
        if self.is_fifo() {
            self.fifo_is_pending(port, bits)
        } else {
            port < NR_PORTS && bits.is_pending(port)
        }
    }

    /// Clears `port`'s pending state in the domain's ABI (Xen's `evtchn_port_clear_pending`).
    pub fn clear_pending(&mut self, port: Port, bits: &mut impl SharedBits) {
        if self.is_fifo() {
            self.fifo_clear_pending(port, bits);
        } else if port < NR_PORTS {
            bits.clear_pending(port);
        }
    }

    /// Xen's `evtchn_check_pollers`.
    pub(crate) fn wake_pollers(&mut self, port: Port) -> VcpuMask {
        let mut woken = VcpuMask::EMPTY;
        if self.polling.is_empty() {
            return woken;
        }
        for v in self.polling.iter() {
            let hit = match self.poll[v as usize] {
                Some(PollTarget::Any) => true,
                Some(PollTarget::Port(p)) => p == port,
                None => false,
            };
            if hit {
                woken.insert(v);
                self.poll[v as usize] = None;
            }
        }
        self.polling = VcpuMask::from_bits(self.polling.bits() & !woken.bits());
        woken
    }
}
