//! Device interrupts for the control domain: its virtual I/O APICs (`hvm::vioapic`, one
//! per host I/O APIC, in `DomState::vioapics`) bound to the host's pins
//! (`arch::x86::ioapic`), as Xen binds a PVH hardware domain's vIOAPIC pins.
//!
//! * dom0 writes an RTE (MMIO, `domain::mmio`): the physical pin of that GSI follows it:
//!   programmed to the GSI's hypervisor vector with dom0's trigger mode and polarity, and
//!   masked or unmasked as dom0 asks. GSIs the hypervisor keeps ([`reserved`]) never are.
//! * The physical interrupt: the handler only marks the GSI pending (and masks a level
//!   pin). [`poll`], run by every CPU in its scheduling loop and after every guest exit,
//!   hands pending GSIs to the vIOAPIC, which says where the vector dom0 programmed goes;
//!   each target vCPU gets it posted in its LAPIC and is woken (poked if it runs
//!   elsewhere), the path of an IPI between vCPUs.
//! * A level pin keeps Remote IRR until dom0's LAPIC EOIs the vector ([`eoi`]); then the
//!   physical pin is unmasked again.

use super::{Domain, Vcpu};
use crate::arch::x86::ioapic;
use crate::hvm::vioapic::{Delivery, Fired, Vioapic, WriteEffect};
use crate::hvm::vlapic::LogicalId;
use crate::hvm::Backend;
use crate::schedule::Hv;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

/// One vIOAPIC per host I/O APIC, at its address, with its id, GSI base and pin count.
pub fn vioapics() -> Vec<Vioapic> {
    ioapic::platform()
        .map(|p| {
            p.ioapics
                .iter()
                .map(|a| Vioapic::new(a.id, a.addr, a.gsi_base, a.pins))
                .collect()
        })
        .unwrap_or_default()
}

/// ISA IRQs whose devices the hypervisor keeps (their ports stay intercepted,
/// `hvm::ioperm`): the PIT (0), the keyboard controller (1, 12), the cascade (2), COM1
/// (4), the RTC (8), the FPU error line (13).
const RESERVED_ISA: [u8; 7] = [0, 1, 2, 4, 8, 12, 13];

/// The GSI ISA IRQ `irq` arrives at (its override, else the identity).
fn isa_gsi(irq: u8) -> u32 {
    ioapic::platform()
        .and_then(|p| p.overrides.iter().find(|o| o.bus == 0 && o.source == irq))
        .map_or(u32::from(irq), |o| o.gsi)
}

/// Whether `gsi` belongs to a device the hypervisor keeps.
pub fn reserved(gsi: u32) -> bool {
    RESERVED_ISA.iter().any(|&irq| isa_gsi(irq) == gsi)
}

/// dom0 wrote vIOAPIC `index`'s registers with this effect: make the physical pin follow.
pub fn rte_written<B: Backend>(dom: &Domain<B>, index: usize, effect: WriteEffect) {
    let WriteEffect::Rte(pin) = effect else {
        return;
    };
    let (gsi, rte) = {
        let st = dom.st.lock();
        let Some(v) = st.vioapics.get(index) else {
            return;
        };
        (v.gsi_base.saturating_add(u32::from(pin)), v.rte(pin))
    };
    if reserved(gsi) || !ioapic::bindable(gsi) {
        if !rte.masked() {
            log::debug!("d{}: GSI {gsi} is not given to dom0; left masked", dom.id);
        }
        return;
    }
    ioapic::program(gsi, rte.level(), rte.active_low(), rte.masked());
}

/// dom0's LAPIC retired `vector`: ends the Remote IRR of level pins with that vector and
/// lets their physical pins fire again.
pub fn eoi<B: Backend>(dom: &Domain<B>, vector: u8) {
    let mut done: arrayvec::ArrayVec<u32, 64> = arrayvec::ArrayVec::new();
    {
        let mut st = dom.st.lock();
        for v in st.vioapics.iter_mut() {
            let mut pins = v.eoi(vector);
            while pins != 0 {
                let pin = pins.trailing_zeros();
                pins &= pins - 1;
                let _ = done.try_push(v.gsi_base.saturating_add(pin));
            }
        }
    }
    for gsi in done {
        ioapic::unmask_after_eoi(gsi);
    }
}

/// Applies pending I/O APIC changes (CPU 0) and delivers the device interrupts that
/// fired. Any CPU, host context, no lock held.
pub fn poll<B: Backend>(hv: &Hv<B>) {
    ioapic::apply();
    crate::arch::x86::msi::take_pending(|m| {
        let Some(dom) = hv.control_domain() else {
            return;
        };
        // Fixed and lowest-priority delivery of a vector 16..255; other modes (SMI, NMI,
        // INIT, ExtINT) are not given.
        if m.delivery() > 1 || m.vector() < 16 {
            log::debug!("d{}: MSI {m:x?} not deliverable; dropped", dom.id);
            return;
        }
        let d = Delivery {
            vector: m.vector(),
            dest: m.dest(),
            logical: m.logical(),
            lowest_priority: m.delivery() == 1,
        };
        deliver(hv, &dom, d);
    });
    let Some(pending) = ioapic::take_pending() else {
        return;
    };
    let Some(dom) = hv.control_domain() else {
        return;
    };
    for (w, mut bits) in pending.into_iter().enumerate() {
        while bits != 0 {
            let gsi = (w * 64) as u32 + bits.trailing_zeros();
            bits &= bits - 1;
            let fired = {
                let mut st = dom.st.lock();
                st.vioapics
                    .iter_mut()
                    .find_map(|v| v.pin_of(gsi).map(|pin| v.fire(pin)))
            };
            match fired {
                Some(Fired::Deliver(d)) => deliver(hv, &dom, d),
                Some(Fired::Held) => {}
                Some(Fired::Refused) | None => {
                    log::debug!("d{}: GSI {gsi}: RTE not deliverable; dropped", dom.id)
                }
            }
        }
    }
}

/// Posts `d`'s vector to the vCPUs its destination names and wakes them.
fn deliver<B: Backend>(hv: &Hv<B>, dom: &Domain<B>, d: Delivery) {
    let named = |t: &&Vcpu<B>| {
        if d.logical {
            LogicalId::from_bits(t.apic_logical.load(Ordering::SeqCst)).matches(u32::from(d.dest))
        } else {
            // APIC ids are the vCPU ids (acpi-tables' MADT); 0xff is the broadcast.
            d.dest == 0xff || u32::from(d.dest) == t.id
        }
    };
    for t in dom.vcpus.iter().filter(named) {
        t.post_ipi(d.vector);
        hv.wake(dom, t);
        if d.lowest_priority {
            break;
        }
    }
}
