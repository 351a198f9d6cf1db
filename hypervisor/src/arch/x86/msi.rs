//! Host vectors for dom0's MSIs (`hvm::vpci` binds a device's MSI capability here).
//!
//! Each bound MSI has a slot: its host vector is [`VECTOR_BASE`]` + slot`, and the device
//! is programmed to send it to the boot CPU, fixed and edge-triggered. The slot's target
//! is the message dom0 programmed (its address and data, as dom0 sees them), kept in an
//! atomic: dom0 may change it at any time, and the handler and [`take_pending`] read it
//! without a lock. The handler ([`interrupt`]) EOIs the local APIC and marks the slot
//! pending; host context (`domain::devirq::poll`) delivers the message dom0 programmed
//! to its vCPUs, as an IPI between them.

use super::percpu;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Host vector of MSI slot n.
pub const VECTOR_BASE: u8 = 0xd0;
/// MSI slots (vectors 0xd0..0xef).
pub const SLOTS: usize = 0x20;

/// A slot's target: bit 63 set when bound, bits 47:16 dom0's message address (low
/// dword), bits 15:0 its message data.
#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);
static TARGET: [AtomicU64; SLOTS] = [Z; SLOTS];
const BOUND: u64 = 1 << 63;
/// Slots in use (bit n: slot n).
static USED: AtomicU64 = AtomicU64::new(0);
static PENDING: AtomicU64 = AtomicU64::new(0);
static ANY_PENDING: AtomicBool = AtomicBool::new(false);

pub use crate::hvm::vpci::Message;

/// Takes a free slot; None when all are bound.
pub fn alloc() -> Option<usize> {
    let mut used = USED.load(Ordering::SeqCst);
    loop {
        let slot = (!used).trailing_zeros() as usize;
        if slot >= SLOTS {
            return None;
        }
        match USED.compare_exchange(used, used | 1 << slot, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Some(slot),
            Err(now) => used = now,
        }
    }
}

/// Gives a slot back (its device no longer sends it).
pub fn free(slot: usize) {
    if slot < SLOTS {
        TARGET[slot].store(0, Ordering::SeqCst);
        USED.fetch_and(!(1 << slot), Ordering::SeqCst);
    }
}

/// Where slot `slot`'s interrupts go in dom0 from now on.
pub fn set_target(slot: usize, m: Message) {
    if slot < SLOTS {
        let v = BOUND | u64::from(m.address) << 16 | u64::from(m.data);
        TARGET[slot].store(v, Ordering::SeqCst);
    }
}

/// The host message a device with slot `slot` sends: fixed, edge, to the boot CPU.
pub fn host_message(slot: usize) -> Message {
    let cpu0 = percpu::cpu(0).map_or(0, |c| c.apic_id.load(Ordering::Relaxed) as u8);
    Message {
        address: 0xfee0_0000 | u32::from(cpu0) << 12,
        data: u16::from(VECTOR_BASE) + slot as u16,
    }
}

/// Whether `vector` is an MSI slot's.
pub fn owns_vector(vector: u8) -> bool {
    vector >= VECTOR_BASE && usize::from(vector - VECTOR_BASE) < SLOTS
}

/// The interrupt handler for an MSI vector: no locks, no logging.
pub fn interrupt(vector: u8) {
    let slot = usize::from(vector - VECTOR_BASE);
    super::lapic::eoi();
    PENDING.fetch_or(1 << slot, Ordering::SeqCst);
    ANY_PENDING.store(true, Ordering::SeqCst);
    percpu::raise_softirq(percpu::softirq::EVENT_CHECK);
}

/// The messages of the slots that fired since the last call (slots unbound meanwhile
/// are dropped), for host context.
pub fn take_pending(mut each: impl FnMut(Message)) {
    if !ANY_PENDING.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut bits = PENDING.swap(0, Ordering::SeqCst);
    while bits != 0 {
        let slot = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let t = TARGET[slot].load(Ordering::SeqCst);
        if t & BOUND != 0 {
            each(Message {
                address: (t >> 16) as u32,
                data: t as u16,
            });
        }
    }
}
