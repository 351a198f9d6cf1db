//! Spin locks that know their place in the lock order.
//!
//! Every lock of the hypervisor is a [`Lock`] with a [`Level`]. A CPU may take a lock only
//! while every lock it already holds has a lower level, so no two CPUs can ever wait for
//! each other (the order is a total one). Two locks of the same level (two domains' state)
//! may be held together only through [`Lock::lock_nested`], by code that takes them in a
//! fixed order of its own (ascending domid, `xen::events::lock_pair`).
//!
//! Debug builds check the order on every acquisition and panic, naming both levels, when
//! it is broken; they also check that a CPU holds no lock when it enters a guest
//! ([`assert_none_held`]), since a vCPU may run for a whole time slice. Release builds
//! compile to plain spin locks.
//!
//! Interrupts: host code runs with interrupts disabled except in the idle loop's halt, and
//! interrupt handlers take no locks (they set per-CPU atomics), so a lock is never wanted
//! by an interrupt on the CPU that holds it and no interrupt masking is needed here.

#![allow(unsafe_code)]

use core::fmt;
use core::ops::{Deref, DerefMut};

/// Declares [`Level`] and `all::ALL` (every level, in order) from one list.
macro_rules! levels {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A lock's place in the order, outermost first. A CPU takes locks only in this
        /// order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Level {
            $($(#[doc = $doc])* $name,)*
        }

        mod all {
            /// Every level, in order (`ALL[l] as usize == l`).
            pub const ALL: &[super::Level] = &[$(super::Level::$name,)*];
        }
    };
}

levels! {
    /// Destroyed domains waiting for their last reference (`schedule::Hv::graves`).
    Graves,
    /// The free-memory baseline taken before the first domU (`schedule::Hv::baseline`).
    Baseline,
    /// The domain table (`domain::table`).
    DomainTable,
    /// The scheduling policy (`schedule::Hv::sched`).
    Sched,
    /// A domain's state: events, grants, life (`Domain::st`); two at once in domid order.
    DomainState,
    /// A vCPU's parked hardware half (`Vcpu::ctx`).
    VcpuCtx,
    /// A vCPU's runstate accounting (`Vcpu::runstate`).
    Runstate,
    /// The heap of vCPU timer deadlines (`schedule::Hv::timers`).
    Timers,
    /// A domain's memory map (`Domain::e820`).
    E820,
    /// The host's PCI configuration ports and dom0's mediated view of them
    /// (`arch::x86::pci::HOST`).
    Pci,
    /// A domain's p2m and RAM bookkeeping (`GuestMemory`).
    P2m,
    /// The frame allocator (`mm::phys::FRAMES`).
    Frames,
    /// The end of the direct map (`mm::phys`).
    MappedLimit,
    /// A CPU's ASID/VPID generations (`PerCpu::asids`).
    Asids,
    /// Console input waiting for the control domain (`xen::console`).
    ConsoleInput,
    /// The console itself: anything may log while holding anything.
    Console,
}

/// How many levels there are (each gets a 4-bit count of holders on a CPU).
const LEVELS: usize = all::ALL.len();
const _: () = assert!(
    LEVELS * 4 <= 64,
    "the held-lock word has 16 four-bit counts"
);

/// A spin lock with a [`Level`].
pub struct Lock<T: ?Sized> {
    level: Level,
    inner: spin::Mutex<T>,
}

/// Proof of holding a [`Lock`]; releases it when dropped.
pub struct Guard<'a, T: ?Sized> {
    level: Level,
    inner: spin::MutexGuard<'a, T>,
}

impl<T> Lock<T> {
    pub const fn new(level: Level, value: T) -> Self {
        Lock {
            level,
            inner: spin::Mutex::new(value),
        }
    }
}

impl<T: ?Sized> Lock<T> {
    /// Takes the lock, spinning while another CPU holds it.
    #[track_caller]
    pub fn lock(&self) -> Guard<'_, T> {
        order::acquire(self.level, false);
        Guard {
            level: self.level,
            inner: self.inner.lock(),
        }
    }

    /// Takes a second lock of the level already held, for code that orders such locks
    /// itself (see the module documentation).
    #[track_caller]
    pub fn lock_nested(&self) -> Guard<'_, T> {
        order::acquire(self.level, true);
        Guard {
            level: self.level,
            inner: self.inner.lock(),
        }
    }

    /// The data, through exclusive access to the lock itself (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Whether some CPU holds the lock (for fatal paths only).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Releases the lock whoever holds it: only for a fatal path that must print and will
    /// never return to the holder.
    ///
    /// # Safety
    /// The holder must never touch the data again (the machine is going down).
    pub unsafe fn force_unlock(&self) {
        order::forget(self.level);
        // SAFETY: the caller guarantees the holder never runs again.
        unsafe { self.inner.force_unlock() }
    }
}

impl<T: ?Sized> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        order::release(self.level);
    }
}

impl<T: ?Sized> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lock({:?})", self.level)
    }
}

/// Panics (debug builds) if this CPU holds any lock: called right before a guest runs.
#[track_caller]
pub fn assert_none_held() {
    if let Some(held) = order::held() {
        assert!(
            held == 0,
            "entering a guest while holding locks: {}",
            order::Names(held)
        );
    }
}

/// The per-CPU record of held levels (debug builds; a no-op otherwise).
mod order {
    use super::all::ALL;
    use super::{Level, LEVELS};

    use core::fmt;

    /// A held-lock word: a 4-bit count per level, level `l` at bits `4l..4l+4`.
    pub struct Names(pub u64);

    impl fmt::Display for Names {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut first = true;
            for (l, level) in ALL.iter().enumerate() {
                let n = (self.0 >> (4 * l)) & 0xf;
                if n != 0 {
                    write!(f, "{}{level:?}", if first { "" } else { ", " })?;
                    if n > 1 {
                        write!(f, " x{n}")?;
                    }
                    first = false;
                }
            }
            Ok(())
        }
    }

    /// Whether a CPU holding `held` may take a lock of `level` (`nested`: a second one of
    /// the highest level it holds).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub fn allowed(held: u64, level: Level, nested: bool) -> bool {
        let l = level as u32;
        let above = if l + 1 >= LEVELS as u32 {
            0
        } else {
            held >> (4 * (l + 1))
        };
        let same = (held >> (4 * l)) & 0xf;
        above == 0 && (same == 0 || (nested && same < 0xf))
    }

    #[cfg(all(debug_assertions, target_os = "none"))]
    mod slot {
        use crate::arch::x86::percpu;
        use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

        /// Held-lock words by CPU index; each changed only by its own CPU.
        static HELD: [AtomicU64; percpu::MAX_CPUS] =
            [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

        /// This CPU's word, once its per-CPU data exists (early boot is not tracked).
        pub fn this() -> Option<&'static AtomicU64> {
            if crate::arch::x86::regs::rdmsr(0xc000_0101) == 0 {
                return None;
            }
            HELD.get(percpu::this().index as usize)
        }

        pub fn load(w: &AtomicU64) -> u64 {
            w.load(Relaxed)
        }

        pub fn store(w: &AtomicU64, v: u64) {
            w.store(v, Relaxed)
        }
    }

    #[cfg(all(debug_assertions, target_os = "none"))]
    #[track_caller]
    pub fn acquire(level: Level, nested: bool) {
        let Some(w) = slot::this() else { return };
        let held = slot::load(w);
        assert!(
            allowed(held, level, nested),
            "lock order: taking {:?}{} while holding {}",
            level,
            if nested { " (nested)" } else { "" },
            Names(held)
        );
        slot::store(w, held + (1 << (4 * level as u32)));
    }

    #[cfg(all(debug_assertions, target_os = "none"))]
    pub fn release(level: Level) {
        let Some(w) = slot::this() else { return };
        let held = slot::load(w);
        let bit = 1u64 << (4 * level as u32);
        // A lock taken before the CPU's data existed is released untracked.
        if (held >> (4 * level as u32)) & 0xf != 0 {
            slot::store(w, held - bit);
        }
    }

    /// Clears this CPU's count for `level` (a lock forced open on a fatal path).
    #[cfg(all(debug_assertions, target_os = "none"))]
    pub fn forget(level: Level) {
        if let Some(w) = slot::this() {
            slot::store(w, slot::load(w) & !(0xf << (4 * level as u32)));
        }
    }

    #[cfg(all(debug_assertions, target_os = "none"))]
    pub fn held() -> Option<u64> {
        slot::this().map(slot::load)
    }

    #[cfg(not(all(debug_assertions, target_os = "none")))]
    pub fn acquire(_: Level, _: bool) {}

    #[cfg(not(all(debug_assertions, target_os = "none")))]
    pub fn release(_: Level) {}

    #[cfg(not(all(debug_assertions, target_os = "none")))]
    pub fn forget(_: Level) {}

    #[cfg(not(all(debug_assertions, target_os = "none")))]
    pub fn held() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::order::{allowed, Names};
    use super::Level::*;
    use super::*;

    fn one(l: Level) -> u64 {
        1 << (4 * l as u32)
    }

    #[test]
    fn order_is_enforced() {
        assert!(allowed(0, Graves, false));
        assert!(allowed(0, Console, false));
        assert!(allowed(one(Sched), DomainState, false), "outer to inner");
        assert!(!allowed(one(DomainState), Sched, false), "inner to outer");
        assert!(allowed(one(Sched) | one(P2m), Frames, false));
        assert!(!allowed(one(Sched) | one(Frames), P2m, false));
        assert!(allowed(
            one(Console) - one(Console) + one(Frames),
            Console,
            false
        ));
    }

    #[test]
    fn same_level_only_nested() {
        assert!(!allowed(one(DomainState), DomainState, false));
        assert!(allowed(one(DomainState), DomainState, true));
        assert!(
            !allowed(one(DomainState) | one(P2m), DomainState, true),
            "nesting does not excuse a higher level held"
        );
        assert!(
            !allowed(0xf * one(DomainState), DomainState, true),
            "count full"
        );
    }

    #[test]
    fn every_level_listed_in_order() {
        for (i, l) in super::all::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
    }

    #[test]
    fn names_list_what_is_held() {
        let s = alloc::format!("{}", Names(one(Sched) | (2 * one(DomainState))));
        assert_eq!(s, "Sched, DomainState x2");
    }

    #[test]
    fn guards_release_in_any_order() {
        let a = Lock::new(Sched, 1);
        let b = Lock::new(DomainState, 2);
        let ga = a.lock();
        let gb = b.lock();
        assert_eq!(*ga + *gb, 3);
        drop(ga);
        drop(gb);
        assert!(!a.is_locked() && !b.is_locked());
    }
}
