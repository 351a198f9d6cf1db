//! One credit2 runqueue: the runnable, waiting vCPUs of a set of CPUs ordered by credit,
//! split into affinity classes so that "best vCPU allowed on CPU c" is cheap.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::types::{CpuMask, VcpuRef};

/// Position of a queued vCPU: most credit first, then first queued (FIFO among equals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QKey {
    pub credit: Reverse<i64>,
    pub seq: u64,
    pub vcpu: VcpuRef,
}

impl QKey {
    pub fn new(credit: i64, seq: u64, vcpu: VcpuRef) -> Self {
        Self {
            credit: Reverse(credit),
            seq,
            vcpu,
        }
    }

    pub fn credit(&self) -> i64 {
        self.credit.0
    }
}

/// A queued vCPU's class (its hard affinity, online CPUs only) and key: what removing it
/// needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub class: u64,
    pub key: QKey,
}

/// The queue proper plus the bookkeeping of the vCPUs assigned to the runqueue.
///
/// Waiting vCPUs are kept in one ordered set per *affinity class* (distinct hard-affinity
/// mask). The best vCPU allowed on a CPU is the best of the heads of the
/// classes containing it: O(k log n) for k classes, k = 1 when nobody is pinned.
#[derive(Debug)]
pub(crate) struct RunQueue {
    /// The CPUs served by this runqueue.
    pub cpus: CpuMask,
    classes: BTreeMap<u64, BTreeSet<QKey>>,
    queued: usize,
    /// Every vCPU assigned to this runqueue, whatever its state (credit reset iterates it).
    pub members: BTreeSet<VcpuRef>,
    /// Multiset of the members' weights, for the maximum weight.
    weights: BTreeMap<u16, u32>,
}

impl RunQueue {
    pub fn new(cpus: CpuMask) -> Self {
        Self {
            cpus,
            classes: BTreeMap::new(),
            queued: 0,
            members: BTreeSet::new(),
            weights: BTreeMap::new(),
        }
    }

    /// Number of queued (waiting) vCPUs.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn insert(&mut self, slot: Slot) {
        debug_assert!(slot.class & self.cpus.0 != 0);
        if self.classes.entry(slot.class).or_default().insert(slot.key) {
            self.queued += 1;
        }
    }

    pub fn remove(&mut self, slot: &Slot) -> bool {
        let Some(set) = self.classes.get_mut(&slot.class) else {
            return false;
        };
        let found = set.remove(&slot.key);
        if set.is_empty() {
            self.classes.remove(&slot.class);
        }
        if found {
            self.queued -= 1;
        }
        found
    }

    /// The best queued vCPU that may run on `cpu`.
    pub fn best(&self, cpu: u32) -> Option<Slot> {
        let bit = CpuMask::single(cpu).0;
        let mut best: Option<Slot> = None;
        for (&class, set) in &self.classes {
            if class & bit == 0 {
                continue;
            }
            if let Some(&key) = set.first() {
                if best.is_none_or(|b| key < b.key) {
                    best = Some(Slot { class, key });
                }
            }
        }
        best
    }

    /// Removes every queued vCPU (for a rebuild after a credit reset).
    pub fn drain(&mut self) -> Vec<Slot> {
        let mut out = Vec::with_capacity(self.queued);
        for (class, set) in core::mem::take(&mut self.classes) {
            out.extend(set.into_iter().map(|key| Slot { class, key }));
        }
        self.queued = 0;
        out
    }

    pub fn add_member(&mut self, v: VcpuRef, weight: u16) {
        if self.members.insert(v) {
            *self.weights.entry(weight).or_default() += 1;
        }
    }

    pub fn remove_member(&mut self, v: VcpuRef, weight: u16) {
        if self.members.remove(&v) {
            self.drop_weight(weight);
        }
    }

    pub fn change_weight(&mut self, old: u16, new: u16) {
        self.drop_weight(old);
        *self.weights.entry(new).or_default() += 1;
    }

    fn drop_weight(&mut self, weight: u16) {
        if let Some(n) = self.weights.get_mut(&weight) {
            *n -= 1;
            if *n == 0 {
                self.weights.remove(&weight);
            }
        }
    }

    /// The largest weight among the members (1 if none): the reference burn rate.
    pub fn max_weight(&self) -> u16 {
        self.weights.last_key_value().map_or(1, |(&w, _)| w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> VcpuRef {
        VcpuRef::new(1, n)
    }

    #[test]
    fn best_respects_classes_and_order() {
        let mut rq = RunQueue::new(CpuMask::all(4));
        let a = Slot {
            class: 0b1111,
            key: QKey::new(100, 1, v(1)),
        };
        let b = Slot {
            class: 0b0010,
            key: QKey::new(500, 2, v(2)),
        };
        let c = Slot {
            class: 0b1111,
            key: QKey::new(100, 0, v(3)),
        };
        rq.insert(a);
        rq.insert(b);
        rq.insert(c);
        assert_eq!(rq.queued(), 3);
        assert_eq!(rq.best(1), Some(b));
        assert_eq!(rq.best(0), Some(c), "FIFO among equal credit");
        assert!(rq.remove(&c));
        assert!(!rq.remove(&c));
        assert_eq!(rq.best(0), Some(a));
        assert!(rq.remove(&b));
        assert_eq!(rq.best(1), Some(a));
        assert_eq!(rq.drain().len(), 1);
        assert_eq!(rq.queued(), 0);
        assert_eq!(rq.best(0), None);
    }

    #[test]
    fn max_weight_tracks_multiset() {
        let mut rq = RunQueue::new(CpuMask::all(1));
        assert_eq!(rq.max_weight(), 1);
        rq.add_member(v(1), 256);
        rq.add_member(v(2), 512);
        rq.add_member(v(3), 512);
        assert_eq!(rq.max_weight(), 512);
        rq.remove_member(v(2), 512);
        assert_eq!(rq.max_weight(), 512);
        rq.change_weight(512, 128);
        assert_eq!(rq.max_weight(), 256);
    }
}
