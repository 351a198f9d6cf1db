//! Xen event channels, 2-level and FIFO ABIs: per-domain port tables, the `EVTCHNOP_*` state machine with
//! Xen's error codes, and 2-level delivery (`evtchn_pending` / `evtchn_mask` /
//! `evtchn_pending_sel` / `evtchn_upcall_pending`), plus `SCHEDOP_poll` and VIRQ helpers.
//!
//! Semantics follow Xen's `xen/common/event_channel.c` and `xen/common/event_2l.c`
//! (4.17-era; error order per sub-op is documented on each method) and
//! `docs/xen-pvh-abi.md` §4.4, §4.7, §6.1 and §7.
//!
//! # Layers
//!
//! * [`EventChannels`]: one domain's table. Single-domain sub-ops (`alloc_unbound`,
//!   `bind_virq`, `bind_ipi`, `status`, `bind_vcpu`, `unmask`, `send`), delivery
//!   ([`EventChannels::set_pending`], [`EventChannels::raise_virq`]) and polling.
//! * [`bind_interdomain`] and [`close`]: the sub-ops that touch two tables. The caller locks
//!   both domains (Xen: lower one first) and passes the remote table, or `None` for loopback.
//! * [`Registry`]: a map of domains with hypercall-shaped methods taking the [`Caller`];
//!   usable directly behind one lock, and what the tests drive.
//!
//! Guest-memory bits are accessed through [`SharedBits`]; every delivery returns a [`Kick`]
//! listing the vCPUs the caller must kick or wake.
//!
//! # Locking contract
//!
//! All methods of one domain's [`EventChannels`] must be called with that domain's event
//! lock held (they take `&mut self`). The guest may concurrently flip bits in `shared_info`;
//! that is why [`SharedBits`] is atomic. `SCHEDOP_poll` registration and `set_pending` are
//! race-free as long as both run under the domain's lock.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod bits;
mod fifo;
mod kick;
mod pair;
mod registry;
mod table;

pub use bits::{SharedBits, VecBits};
pub use fifo::{
    FIFO_CONTROL_BLOCK_SIZE, FIFO_HEAD_OFFSET, FIFO_MAX_ARRAY_PAGES, FIFO_NR_PORTS, FIFO_QUEUES,
    FIFO_WORDS_PER_PAGE,
};
pub use kick::{Kick, Notify, VcpuMask};
pub use pair::{bind_interdomain, close};
pub use registry::{Domain, Registry};
pub use table::{Config, EventChannels, PollOutcome, SendOutcome, State};

pub use xen_abi::{DomId, Errno};

use xen_abi::event_channel::{
    EVTCHNOP_EXPAND_ARRAY, EVTCHNOP_INIT_CONTROL, EVTCHNOP_SET_PRIORITY, EVTCHN_2L_NR_CHANNELS,
};
use xen_abi::xen::DOMID_SELF;

/// An event-channel port number (`evtchn_port_t`).
pub type Port = xen_abi::EvtchnPort;

/// Ports of the 2-level ABI on x86_64: 64 words of 64 bits.
pub const NR_PORTS: u32 = EVTCHN_2L_NR_CHANNELS;
/// Bits per `evtchn_pending`/`evtchn_mask` word (`xen_ulong_t` on x86_64).
pub const BITS_PER_WORD: u32 = 64;
/// Most vCPUs a domain may have here (Xen's `HVM_MAX_VCPUS`).
pub const MAX_VCPUS: u32 = 128;
/// Most ports one `SCHEDOP_poll` may list (Xen: "fairly arbitrary limit", `-EINVAL` above).
pub const MAX_POLL_PORTS: usize = 128;
/// Granularity in which a table's valid port range grows (Xen's `EVTCHNS_PER_BUCKET` =
/// `PAGE_SIZE / next_power_of_2(sizeof(struct evtchn))` = 64 on x86_64). Ports at or above the
/// valid range are "invalid" (`-EINVAL` for `status`, `close`, `send`, `unmask`, ...); free
/// ports below it are "closed".
pub const PORTS_PER_BUCKET: u32 = 64;

/// Who issues a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The calling domain.
    pub domid: DomId,
    /// Whether it may act on other domains (Xen's XSM dummy `XSM_TARGET` policy: the control
    /// domain, or the device model of the target). Checked by `alloc_unbound`, `status` and
    /// `reset` with a foreign `dom`.
    pub privileged: bool,
}

impl Caller {
    /// A caller.
    pub const fn new(domid: DomId, privileged: bool) -> Self {
        Caller { domid, privileged }
    }

    /// Resolves `DOMID_SELF` to the caller's id (Xen's `rcu_lock_domain_by_any_id`).
    pub const fn resolve(&self, dom: DomId) -> DomId {
        resolve_domid(self.domid, dom)
    }

    /// Xen's `XSM_TARGET` check of the caller against `target`: `-EPERM` unless it is the
    /// caller itself or the caller is privileged.
    pub const fn check_target(&self, target: DomId) -> Result<(), Errno> {
        if self.domid == target || self.privileged {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }
}

/// `DOMID_SELF` → `caller`; any other id unchanged.
pub const fn resolve_domid(caller: DomId, dom: DomId) -> DomId {
    if dom == DOMID_SELF {
        caller
    } else {
        dom
    }
}

/// The result of an `EVTCHNOP_*` command this crate does not implement: `Some(-ENOSYS)` for
/// unknown commands (the `default:` case of Xen's `do_event_channel_op`); `None` for the
/// 2-level commands 0..=10 and the FIFO ones (`init_control`, `expand_array`,
/// `set_priority`), all handled by this crate.
pub fn unsupported_op(cmd: u64) -> Option<Errno> {
    match cmd {
        0..=10 | EVTCHNOP_INIT_CONTROL | EVTCHNOP_EXPAND_ARRAY | EVTCHNOP_SET_PRIORITY => None,
        _ => Some(Errno::ENOSYS),
    }
}
