//! `event_channel_op` hypercall: sub-ops, argument structs and port states.
//!
//! Source: `xen/include/public/event_channel.h`, interface version 0x00040d00.

use crate::{DomId, EvtchnPort};

/// Bind to a remote domain's unbound port; [`EvtchnBindInterdomain`].
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
/// Bind a VIRQ on a vCPU; [`EvtchnBindVirq`].
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// Bind a physical IRQ; [`EvtchnBindPirq`].
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
/// Close a port; [`EvtchnClose`].
pub const EVTCHNOP_CLOSE: u64 = 3;
/// Notify the remote end; [`EvtchnSend`].
pub const EVTCHNOP_SEND: u64 = 4;
/// Query a port; [`EvtchnStatus`].
pub const EVTCHNOP_STATUS: u64 = 5;
/// Allocate an unbound port; [`EvtchnAllocUnbound`].
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// Bind an IPI port on a vCPU; [`EvtchnBindIpi`].
pub const EVTCHNOP_BIND_IPI: u64 = 7;
/// Change a port's notify vCPU; [`EvtchnBindVcpu`].
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
/// Unmask a port; [`EvtchnUnmask`].
pub const EVTCHNOP_UNMASK: u64 = 9;
/// Close all ports of a domain; [`EvtchnReset`].
pub const EVTCHNOP_RESET: u64 = 10;
/// FIFO ABI: register a control block; [`EvtchnInitControl`].
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
/// FIFO ABI: add an event array page; [`EvtchnExpandArray`].
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
/// FIFO ABI: set a port's priority; [`EvtchnSetPriority`].
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;

/// Port state: not in use.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// Port state: waiting for an interdomain connection.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// Port state: connected to a remote domain.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// Port state: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// Port state: bound to a VIRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// Port state: bound to an IPI.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `BIND_PIRQ__WILL_SHARE`: the PIRQ may be shared.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// Number of ports of the 2-level ABI on x86_64 (64 × 64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// FIFO ABI: highest priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// FIFO ABI: default priority.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// FIFO ABI: lowest priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// FIFO ABI: number of priority queues.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// FIFO ABI event word bit: pending.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// FIFO ABI event word bit: masked.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// FIFO ABI event word bit: linked.
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// FIFO ABI event word bit: busy.
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// FIFO ABI: bits of the link field.
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// FIFO ABI: mask of the link field.
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// FIFO ABI: number of ports.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

zc_struct! {
    /// `struct evtchn_alloc_unbound` (`EVTCHNOP_alloc_unbound`).
    pub struct EvtchnAllocUnbound {
        /// IN: domain that gets the port (`DOMID_SELF`, or another domain if privileged).
        pub dom: DomId,
        /// IN: domain allowed to bind to it (`DOMID_SELF` resolves to the caller).
        pub remote_dom: DomId,
        /// OUT: the new port.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnAllocUnbound, size = 8, align = 4, dom @ 0, remote_dom @ 2, port @ 4);

zc_struct! {
    /// `struct evtchn_bind_interdomain` (`EVTCHNOP_bind_interdomain`).
    pub struct EvtchnBindInterdomain {
        /// IN: remote domain (`DOMID_SELF` allowed: loopback).
        pub remote_dom: DomId,
        /// Padding.
        pub _pad0: u16,
        /// IN: the remote domain's unbound port.
        pub remote_port: EvtchnPort,
        /// OUT: the new local port.
        pub local_port: EvtchnPort,
    }
}
assert_layout!(EvtchnBindInterdomain, size = 12, align = 4,
    remote_dom @ 0, _pad0 @ 2, remote_port @ 4, local_port @ 8);

zc_struct! {
    /// `struct evtchn_bind_virq` (`EVTCHNOP_bind_virq`).
    pub struct EvtchnBindVirq {
        /// IN: `VIRQ_*` number.
        pub virq: u32,
        /// IN: vCPU to deliver to (must be 0 for global VIRQs).
        pub vcpu: u32,
        /// OUT: the new port.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnBindVirq, size = 12, align = 4, virq @ 0, vcpu @ 4, port @ 8);

zc_struct! {
    /// `struct evtchn_bind_pirq` (`EVTCHNOP_bind_pirq`).
    pub struct EvtchnBindPirq {
        /// IN: physical IRQ.
        pub pirq: u32,
        /// IN: `BIND_PIRQ__*` flags.
        pub flags: u32,
        /// OUT: the new port.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnBindPirq, size = 12, align = 4, pirq @ 0, flags @ 4, port @ 8);

zc_struct! {
    /// `struct evtchn_bind_ipi` (`EVTCHNOP_bind_ipi`).
    pub struct EvtchnBindIpi {
        /// IN: notify vCPU.
        pub vcpu: u32,
        /// OUT: the new port.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnBindIpi, size = 8, align = 4, vcpu @ 0, port @ 4);

zc_struct! {
    /// `struct evtchn_close` (`EVTCHNOP_close`).
    pub struct EvtchnClose {
        /// IN: port to close.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnClose, size = 4, align = 4, port @ 0);

zc_struct! {
    /// `struct evtchn_send` (`EVTCHNOP_send`).
    pub struct EvtchnSend {
        /// IN: local port whose remote end is notified.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnSend, size = 4, align = 4, port @ 0);

zc_struct! {
    /// `struct evtchn_status` (`EVTCHNOP_status`).
    ///
    /// The C union `u` (8 bytes at offset 16) is kept as raw bytes; use the accessors, which
    /// decode it according to `status`.
    pub struct EvtchnStatus {
        /// IN: domain to query (`DOMID_SELF` or, if privileged, another domain).
        pub dom: DomId,
        /// Padding.
        pub _pad0: u16,
        /// IN: port to query.
        pub port: EvtchnPort,
        /// OUT: `EVTCHNSTAT_*`.
        pub status: u32,
        /// OUT: notify vCPU.
        pub vcpu: u32,
        /// OUT: state-specific union (`unbound.dom`, `interdomain.{dom,port}`, `pirq`,
        /// `virq`).
        pub u: [u8; 8],
    }
}
assert_layout!(EvtchnStatus, size = 24, align = 4,
    dom @ 0, _pad0 @ 2, port @ 4, status @ 8, vcpu @ 12, u @ 16);

impl EvtchnStatus {
    fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.u[off], self.u[off + 1]])
    }
    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.u[off],
            self.u[off + 1],
            self.u[off + 2],
            self.u[off + 3],
        ])
    }
    fn put(&mut self, off: usize, bytes: &[u8]) {
        self.u = [0; 8];
        self.u[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// `u.unbound.dom`: the domain allowed to bind (valid for `EVTCHNSTAT_unbound`).
    pub fn unbound_dom(&self) -> DomId {
        self.u16_at(0)
    }
    /// `u.interdomain`: `(remote dom, remote port)` (valid for `EVTCHNSTAT_interdomain`).
    pub fn interdomain(&self) -> (DomId, EvtchnPort) {
        (self.u16_at(0), self.u32_at(4))
    }
    /// `u.pirq` (valid for `EVTCHNSTAT_pirq`).
    pub fn pirq(&self) -> u32 {
        self.u32_at(0)
    }
    /// `u.virq` (valid for `EVTCHNSTAT_virq`).
    pub fn virq(&self) -> u32 {
        self.u32_at(0)
    }

    /// Fills the OUT fields for a closed port.
    pub fn set_closed(&mut self, vcpu: u32) {
        self.status = EVTCHNSTAT_CLOSED;
        self.vcpu = vcpu;
        self.u = [0; 8];
    }
    /// Fills the OUT fields for an unbound port waiting for `remote`.
    pub fn set_unbound(&mut self, vcpu: u32, remote: DomId) {
        self.status = EVTCHNSTAT_UNBOUND;
        self.vcpu = vcpu;
        self.put(0, &remote.to_le_bytes());
    }
    /// Fills the OUT fields for an interdomain port connected to `(dom, port)`.
    pub fn set_interdomain(&mut self, vcpu: u32, dom: DomId, port: EvtchnPort) {
        self.status = EVTCHNSTAT_INTERDOMAIN;
        self.vcpu = vcpu;
        self.put(0, &dom.to_le_bytes());
        self.u[4..8].copy_from_slice(&port.to_le_bytes());
    }
    /// Fills the OUT fields for a PIRQ port.
    pub fn set_pirq(&mut self, vcpu: u32, pirq: u32) {
        self.status = EVTCHNSTAT_PIRQ;
        self.vcpu = vcpu;
        self.put(0, &pirq.to_le_bytes());
    }
    /// Fills the OUT fields for a VIRQ port.
    pub fn set_virq(&mut self, vcpu: u32, virq: u32) {
        self.status = EVTCHNSTAT_VIRQ;
        self.vcpu = vcpu;
        self.put(0, &virq.to_le_bytes());
    }
    /// Fills the OUT fields for an IPI port.
    pub fn set_ipi(&mut self, vcpu: u32) {
        self.status = EVTCHNSTAT_IPI;
        self.vcpu = vcpu;
        self.u = [0; 8];
    }
}

zc_struct! {
    /// `struct evtchn_bind_vcpu` (`EVTCHNOP_bind_vcpu`).
    pub struct EvtchnBindVcpu {
        /// IN: port.
        pub port: EvtchnPort,
        /// IN: new notify vCPU.
        pub vcpu: u32,
    }
}
assert_layout!(EvtchnBindVcpu, size = 8, align = 4, port @ 0, vcpu @ 4);

zc_struct! {
    /// `struct evtchn_unmask` (`EVTCHNOP_unmask`).
    pub struct EvtchnUnmask {
        /// IN: port to unmask.
        pub port: EvtchnPort,
    }
}
assert_layout!(EvtchnUnmask, size = 4, align = 4, port @ 0);

zc_struct! {
    /// `struct evtchn_reset` (`EVTCHNOP_reset`).
    pub struct EvtchnReset {
        /// IN: domain whose ports are closed (`DOMID_SELF` or, if privileged, another).
        pub dom: DomId,
    }
}
assert_layout!(EvtchnReset, size = 2, align = 2, dom @ 0);

zc_struct! {
    /// `struct evtchn_init_control` (`EVTCHNOP_init_control`, FIFO ABI).
    pub struct EvtchnInitControl {
        /// IN: GFN of the control-block page.
        pub control_gfn: u64,
        /// IN: offset of the control block within the page.
        pub offset: u32,
        /// IN: vCPU the control block belongs to.
        pub vcpu: u32,
        /// OUT: number of link bits.
        pub link_bits: u8,
        /// Padding.
        pub _pad: [u8; 7],
    }
}
assert_layout!(EvtchnInitControl, size = 24, align = 8,
    control_gfn @ 0, offset @ 8, vcpu @ 12, link_bits @ 16, _pad @ 17);

zc_struct! {
    /// `struct evtchn_expand_array` (`EVTCHNOP_expand_array`, FIFO ABI).
    pub struct EvtchnExpandArray {
        /// IN: GFN of the new event-array page.
        pub array_gfn: u64,
    }
}
assert_layout!(EvtchnExpandArray, size = 8, align = 8, array_gfn @ 0);

zc_struct! {
    /// `struct evtchn_set_priority` (`EVTCHNOP_set_priority`, FIFO ABI).
    pub struct EvtchnSetPriority {
        /// IN: port.
        pub port: EvtchnPort,
        /// IN: priority (`EVTCHN_FIFO_PRIORITY_*`).
        pub priority: u32,
    }
}
assert_layout!(EvtchnSetPriority, size = 8, align = 4, port @ 0, priority @ 4);

zc_struct! {
    /// `struct evtchn_fifo_control_block` (FIFO ABI, guest memory).
    pub struct EvtchnFifoControlBlock {
        /// IN/OUT: bitmap of ready queues.
        pub ready: u32,
        /// Reserved.
        pub _rsvd: u32,
        /// IN/OUT: head port of each priority queue.
        pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
    }
}
assert_layout!(EvtchnFifoControlBlock, size = 72, align = 4, ready @ 0, _rsvd @ 4, head @ 8);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn status_union_accessors() {
        let mut s = EvtchnStatus::default();
        s.set_interdomain(2, 7, 0x1234);
        assert_eq!(s.status, EVTCHNSTAT_INTERDOMAIN);
        assert_eq!(s.interdomain(), (7, 0x1234));
        let b = s.as_bytes();
        assert_eq!(&b[16..18], &7u16.to_le_bytes());
        assert_eq!(&b[20..24], &0x1234u32.to_le_bytes());
        s.set_unbound(0, 0x7ff0);
        assert_eq!(s.unbound_dom(), 0x7ff0);
        assert_eq!(s.interdomain().1, 0);
        s.set_virq(1, 16);
        assert_eq!((s.status, s.vcpu, s.virq()), (EVTCHNSTAT_VIRQ, 1, 16));
        s.set_pirq(0, 9);
        assert_eq!(s.pirq(), 9);
        s.set_ipi(3);
        assert_eq!((s.status, s.u), (EVTCHNSTAT_IPI, [0; 8]));
        s.set_closed(0);
        assert_eq!(s.status, EVTCHNSTAT_CLOSED);
    }

    #[test]
    fn op_numbers() {
        assert_eq!(EVTCHNOP_INIT_CONTROL, 11);
        assert_eq!(EVTCHNOP_SET_PRIORITY, 13);
        assert_eq!(EVTCHN_2L_NR_CHANNELS, 64 * 64);
        assert_eq!(EVTCHN_FIFO_NR_CHANNELS, 131_072);
    }
}
