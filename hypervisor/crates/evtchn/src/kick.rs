//! What the caller must do after an event-channel operation: which vCPUs to kick.

use crate::MAX_VCPUS;

/// A set of vCPU ids of one domain (at most [`MAX_VCPUS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VcpuMask(u128);

impl VcpuMask {
    /// The empty set.
    pub const EMPTY: VcpuMask = VcpuMask(0);

    /// Adds `vcpu` (ignored if `vcpu >= MAX_VCPUS`).
    pub fn insert(&mut self, vcpu: u32) {
        if vcpu < MAX_VCPUS {
            self.0 |= 1u128 << vcpu;
        }
    }

    /// Removes `vcpu`.
    pub fn remove(&mut self, vcpu: u32) {
        if vcpu < MAX_VCPUS {
            self.0 &= !(1u128 << vcpu);
        }
    }

    /// Whether `vcpu` is in the set.
    pub fn contains(&self, vcpu: u32) -> bool {
        vcpu < MAX_VCPUS && self.0 & (1u128 << vcpu) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Number of vCPUs in the set.
    pub fn len(&self) -> u32 {
        self.0.count_ones()
    }

    /// The union of two sets.
    pub fn union(self, other: VcpuMask) -> VcpuMask {
        VcpuMask(self.0 | other.0)
    }

    /// The raw bitmap (bit `v` = vCPU `v`).
    pub fn bits(&self) -> u128 {
        self.0
    }

    /// The vCPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> {
        let mut m = self.0;
        core::iter::from_fn(move || {
            if m == 0 {
                None
            } else {
                let v = m.trailing_zeros();
                m &= m - 1;
                Some(v)
            }
        })
    }
}

/// vCPUs of **one domain** that need attention after an operation.
///
/// The caller (the hypervisor) must, for every vCPU in
/// * [`Kick::upcalls`]: the vCPU's `evtchn_upcall_pending` went from 0 to 1. Deliver the upcall:
///   in global-callback mode inject the callback vector directly at the next VM entry where
///   the vCPU can take interrupts (re-inject while the flag stays set); in per-vCPU mode set the
///   upcall vector in its virtual LAPIC IRR. Wake it if it is halted or blocked in
///   `SCHEDOP_poll` (Xen's `vcpu_kick` unblocks pollers too; call
///   [`EventChannels::poll_cancel`](crate::EventChannels::poll_cancel)), and send a host IPI
///   if it is running on another pCPU.
/// * [`Kick::pollers`]: the vCPU was blocked in `SCHEDOP_poll` on this port (or on "any port")
///   and has already been deregistered; make it runnable and complete its poll with 0.
///
/// An empty kick needs nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kick {
    /// vCPUs whose `evtchn_upcall_pending` this operation set (it was clear).
    pub upcalls: VcpuMask,
    /// vCPUs woken from `SCHEDOP_poll`.
    pub pollers: VcpuMask,
}

impl Kick {
    /// Nothing to do.
    pub const NONE: Kick = Kick {
        upcalls: VcpuMask::EMPTY,
        pollers: VcpuMask::EMPTY,
    };

    /// Whether nothing needs to be done.
    pub fn is_empty(&self) -> bool {
        self.upcalls.is_empty() && self.pollers.is_empty()
    }

    /// Every vCPU that needs a kick or a wake-up.
    pub fn vcpus(&self) -> VcpuMask {
        self.upcalls.union(self.pollers)
    }

    /// Merges two kicks for the same domain.
    pub fn merge(self, other: Kick) -> Kick {
        Kick {
            upcalls: self.upcalls.union(other.upcalls),
            pollers: self.pollers.union(other.pollers),
        }
    }
}

/// A [`Kick`] addressed to a domain (operations that may notify another domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Domain whose vCPUs are to be kicked.
    pub dom: xen_abi::DomId,
    /// What to do.
    pub kick: Kick,
}

impl VcpuMask {
    /// A set from a raw bitmap.
    pub const fn from_bits(bits: u128) -> VcpuMask {
        VcpuMask(bits)
    }
}
