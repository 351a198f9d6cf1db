//! A map of domains with hypercall-shaped methods.

use alloc::collections::BTreeMap;

use xen_abi::event_channel::EvtchnStatus;

use crate::{
    bind_interdomain, close, Caller, Config, DomId, Errno, EventChannels, Notify, PollOutcome,
    Port, SendOutcome, SharedBits,
};

/// One domain's event-channel table and its guest bits.
#[derive(Clone, Debug)]
pub struct Domain<B> {
    /// The port table.
    pub evtchn: EventChannels,
    /// The domain's `shared_info`/`vcpu_info` event bits.
    pub bits: B,
}

/// Every domain's event channels, keyed by domid.
///
/// Methods mirror the `EVTCHNOP_*` sub-ops: they take the [`Caller`], resolve `DOMID_SELF`,
/// look domains up (`-ESRCH`) and return the [`Notify`]s the caller must act on. Behind one
/// lock this is a complete implementation; a hypervisor with per-domain locks uses
/// [`EventChannels`], [`bind_interdomain`] and [`close`] directly, the same way these methods
/// do.
#[derive(Clone, Debug)]
pub struct Registry<B> {
    doms: BTreeMap<DomId, Domain<B>>,
}

impl<B> Default for Registry<B> {
    fn default() -> Self {
        Registry {
            doms: BTreeMap::new(),
        }
    }
}

impl<B: SharedBits> Registry<B> {
    /// No domains.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a domain. `-EEXIST` if `domid` is taken, `-EINVAL` for a bad config or a
    /// reserved domid (`>= DOMID_FIRST_RESERVED`).
    pub fn add(&mut self, domid: DomId, cfg: Config, bits: B) -> Result<(), Errno> {
        if domid >= xen_abi::xen::DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        if self.doms.contains_key(&domid) {
            return Err(Errno::EEXIST);
        }
        let evtchn = EventChannels::new(domid, cfg)?;
        self.doms.insert(domid, Domain { evtchn, bits });
        Ok(())
    }

    /// A domain.
    pub fn get(&self, domid: DomId) -> Option<&Domain<B>> {
        self.doms.get(&domid)
    }

    /// A domain, mutably.
    pub fn get_mut(&mut self, domid: DomId) -> Option<&mut Domain<B>> {
        self.doms.get_mut(&domid)
    }

    /// The domids, ascending.
    pub fn domids(&self) -> impl Iterator<Item = DomId> + '_ {
        self.doms.keys().copied()
    }

    /// Destroys a domain (Xen's `evtchn_destroy`): marks it dying, closes every port (peers
    /// of its interdomain channels become unbound, reserved for it) and removes it.
    pub fn remove(&mut self, domid: DomId) -> Option<Domain<B>> {
        self.doms.get_mut(&domid)?.evtchn.set_dying();
        self.close_all(domid);
        self.doms.remove(&domid)
    }

    fn dom(&mut self, domid: DomId) -> Result<&mut Domain<B>, Errno> {
        self.doms.get_mut(&domid).ok_or(Errno::ESRCH)
    }

    /// Runs `f` on `a` and, unless it is `a` itself, `b` (`-ESRCH` if either is missing).
    fn with_pair<R>(
        &mut self,
        a: DomId,
        b: DomId,
        f: impl FnOnce(&mut Domain<B>, Option<&mut Domain<B>>) -> R,
    ) -> Result<R, Errno> {
        if a == b {
            return Ok(f(self.dom(a)?, None));
        }
        let mut rb = self.doms.remove(&b).ok_or(Errno::ESRCH)?;
        let out = match self.doms.get_mut(&a) {
            Some(da) => Ok(f(da, Some(&mut rb))),
            None => Err(Errno::ESRCH),
        };
        self.doms.insert(b, rb);
        out
    }

    fn close_port(&mut self, domid: DomId, port: Port) -> Result<(), Errno> {
        let peer = self.dom(domid)?.evtchn.peer_of(port);
        match peer {
            None => {
                let d = self.dom(domid)?;
                close(&mut d.evtchn, port, None, &mut d.bits)
            }
            Some(rd) => self.with_pair(domid, rd, |l, r| {
                close(&mut l.evtchn, port, r.map(|r| &mut r.evtchn), &mut l.bits)
            })?,
        }
    }

    fn close_all(&mut self, domid: DomId) {
        let Some(d) = self.doms.get(&domid) else {
            return;
        };
        let valid = d.evtchn.valid_ports();
        for port in 0..valid {
            // Errors (free/reserved ports) are ignored, as in Xen's reset loop.
            let _ = self.close_port(domid, port);
        }
    }

    /// `EVTCHNOP_alloc_unbound`: `-ESRCH` for an unknown `dom`, then see
    /// [`EventChannels::alloc_unbound`].
    pub fn alloc_unbound(
        &mut self,
        caller: Caller,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        let target = caller.resolve(dom);
        let d = self.dom(target)?;
        d.evtchn.alloc_unbound(caller, remote_dom, &d.bits)
    }

    /// `EVTCHNOP_bind_interdomain`: `-ESRCH` for an unknown remote domain, then see
    /// [`bind_interdomain`]. The notify is for the caller's domain.
    pub fn bind_interdomain(
        &mut self,
        caller: Caller,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<(Port, Notify), Errno> {
        let rdom = caller.resolve(remote_dom);
        if !self.doms.contains_key(&rdom) {
            return Err(Errno::ESRCH);
        }
        let (port, kick) = self.with_pair(caller.domid, rdom, |l, r| {
            bind_interdomain(
                &mut l.evtchn,
                r.map(|r| &mut r.evtchn),
                remote_port,
                &mut l.bits,
            )
        })??;
        Ok((
            port,
            Notify {
                dom: caller.domid,
                kick,
            },
        ))
    }

    /// `EVTCHNOP_bind_virq`; see [`EventChannels::bind_virq`].
    pub fn bind_virq(&mut self, caller: Caller, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        let d = self.dom(caller.domid)?;
        d.evtchn.bind_virq(virq, vcpu, &d.bits)
    }

    /// `EVTCHNOP_bind_ipi`; see [`EventChannels::bind_ipi`].
    pub fn bind_ipi(&mut self, caller: Caller, vcpu: u32) -> Result<Port, Errno> {
        let d = self.dom(caller.domid)?;
        d.evtchn.bind_ipi(vcpu, &d.bits)
    }

    /// `EVTCHNOP_bind_pirq`: always `-EINVAL`; see [`EventChannels::bind_pirq`].
    pub fn bind_pirq(&mut self, caller: Caller, pirq: u32, flags: u32) -> Result<Port, Errno> {
        self.dom(caller.domid)?.evtchn.bind_pirq(pirq, flags)
    }

    /// `EVTCHNOP_close`; see [`close`].
    pub fn close(&mut self, caller: Caller, port: Port) -> Result<(), Errno> {
        self.close_port(caller.domid, port)
    }

    /// `EVTCHNOP_send`; see [`EventChannels::send`]. Returns whom to kick, if anyone.
    pub fn send(&mut self, caller: Caller, port: Port) -> Result<Option<Notify>, Errno> {
        let d = self.dom(caller.domid)?;
        match d.evtchn.send(port, &mut d.bits)? {
            SendOutcome::Local(kick) => Ok(Some(Notify {
                dom: caller.domid,
                kick,
            })),
            SendOutcome::Dropped => Ok(None),
            SendOutcome::Remote {
                dom,
                port: rport,
                from_port,
            } => {
                let Some(r) = self.doms.get_mut(&dom) else {
                    // The peer vanished without closing its ports: cannot happen through
                    // `remove`; treat as a dropped notification.
                    return Ok(None);
                };
                let kick =
                    r.evtchn
                        .deliver_interdomain(rport, caller.domid, from_port, &mut r.bits);
                Ok(Some(Notify { dom, kick }))
            }
        }
    }

    /// `EVTCHNOP_status`: reads `dom` and `port` from `st`, fills the OUT fields.
    /// `-ESRCH` for an unknown domain, then see [`EventChannels::status`].
    pub fn status(&self, caller: Caller, st: &mut EvtchnStatus) -> Result<(), Errno> {
        let target = caller.resolve(st.dom);
        let d = self.doms.get(&target).ok_or(Errno::ESRCH)?;
        d.evtchn.status(caller, st.port, st)
    }

    /// `EVTCHNOP_bind_vcpu`; see [`EventChannels::bind_vcpu`].
    pub fn bind_vcpu(&mut self, caller: Caller, port: Port, vcpu: u32) -> Result<(), Errno> {
        self.dom(caller.domid)?.evtchn.bind_vcpu(port, vcpu)
    }

    /// `EVTCHNOP_unmask`; see [`EventChannels::unmask`].
    pub fn unmask(&mut self, caller: Caller, port: Port) -> Result<Notify, Errno> {
        let d = self.dom(caller.domid)?;
        let kick = d.evtchn.unmask(port, &mut d.bits)?;
        Ok(Notify {
            dom: caller.domid,
            kick,
        })
    }

    /// `EVTCHNOP_reset` of `dom`: `-ESRCH` for an unknown domain, `-EPERM` for a foreign one
    /// unless privileged (`xsm_evtchn_reset`, `XSM_TARGET`), `-EINVAL` for a foreign one that
    /// is not paused by the controller (`controller_paused`); then every port is closed
    /// (errors ignored), peers becoming unbound.
    pub fn reset(
        &mut self,
        caller: Caller,
        dom: DomId,
        controller_paused: bool,
    ) -> Result<(), Errno> {
        let target = caller.resolve(dom);
        self.dom(target)?;
        caller.check_target(target)?;
        if target != caller.domid && !controller_paused {
            return Err(Errno::EINVAL);
        }
        self.close_all(target);
        self.dom(target)?.evtchn.reset_abi()
    }

    /// `EVTCHNOP_init_control` by `caller`; see [`EventChannels::init_control`]. Returns
    /// `link_bits`.
    pub fn init_control(
        &mut self,
        caller: Caller,
        vcpu: u32,
        control_gfn: u64,
        offset: u32,
    ) -> Result<u8, Errno> {
        let d = self.dom(caller.domid)?;
        d.evtchn
            .init_control(vcpu, control_gfn, offset, &mut d.bits)
    }

    /// `EVTCHNOP_expand_array` by `caller`; see [`EventChannels::expand_array`].
    pub fn expand_array(&mut self, caller: Caller, array_gfn: u64) -> Result<Notify, Errno> {
        let d = self.dom(caller.domid)?;
        let kick = d.evtchn.expand_array(array_gfn, &mut d.bits)?;
        Ok(Notify {
            dom: caller.domid,
            kick,
        })
    }

    /// `EVTCHNOP_set_priority` by `caller`; see [`EventChannels::set_priority`].
    pub fn set_priority(&mut self, caller: Caller, port: Port, priority: u32) -> Result<(), Errno> {
        self.dom(caller.domid)?.evtchn.set_priority(port, priority)
    }

    /// `SCHEDOP_poll` by `caller`'s `vcpu`; see [`EventChannels::poll`].
    pub fn poll(
        &mut self,
        caller: Caller,
        vcpu: u32,
        ports: &[Port],
    ) -> Result<PollOutcome, Errno> {
        let d = self.dom(caller.domid)?;
        d.evtchn.poll(vcpu, ports, &d.bits)
    }

    /// Raises `virq` in `dom`; see [`EventChannels::raise_virq`]. `None` for an unknown
    /// domain.
    pub fn raise_virq(&mut self, dom: DomId, virq: u32, vcpu: u32) -> Option<Notify> {
        let d = self.doms.get_mut(&dom)?;
        let kick = d.evtchn.raise_virq(virq, vcpu, &mut d.bits);
        Some(Notify { dom, kick })
    }
}
