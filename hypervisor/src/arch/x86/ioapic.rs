//! The host's I/O APICs: found in the firmware's MADT ([`record`], with the interrupt
//! source overrides), mapped uncacheable by `mm::paging` ([`mmio_pages`]), every pin
//! masked at boot ([`init`]).
//!
//! A GSI given to the control domain is programmed to hypervisor vector
//! [`VECTOR_BASE`]` + gsi`, fixed delivery, physical destination: the boot CPU. **Only the
//! boot CPU (index 0) touches the I/O APIC registers** (the IOREGSEL/IOWIN pair is two
//! accesses that must not interleave): in host context with interrupts disabled, and in
//! the interrupt handler, which therefore cannot interrupt one of its own accesses. Other
//! CPUs ask for a change by storing the wanted entry in an atomic and poking CPU 0, which
//! applies it in [`apply`] (called from its scheduling loop and at every guest exit);
//! [`program`], dom0's RTE writes, also waits for that through a cross-CPU call. So
//! nothing here takes a lock.
//!
//! The handler ([`interrupt`]) EOIs the local APIC, masks a level-triggered pin (the line
//! stays asserted until dom0's driver has served the device), and sets the GSI's pending
//! bit; host context ([`take_pending`]) hands it to the vIOAPIC (`domain::devirq`), and a
//! level pin is unmasked again ([`unmask_after_eoi`]) after dom0's EOI.
#![allow(unsafe_code)]

use super::percpu;
use arrayvec::ArrayVec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;

/// Host vector of GSI n: `VECTOR_BASE + n`, for GSIs below [`MAX_GSIS`].
pub const VECTOR_BASE: u8 = 0x40;
/// GSIs that can be given to dom0 (vectors 0x40..0xcf; 0xd0..0xef are MSI vectors,
/// `super::msi`, and 0xf0 and up the hypervisor's).
pub const MAX_GSIS: usize = 0x90;
const WORDS: usize = MAX_GSIS.div_ceil(64);

const RTE_MASKED: u64 = 1 << 16;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_ACTIVE_LOW: u64 = 1 << 13;

/// One host I/O APIC.
#[derive(Clone, Copy, Debug)]
pub struct HostIoApic {
    pub id: u8,
    /// Physical address of IOREGSEL.
    pub addr: u64,
    pub gsi_base: u32,
    /// Pins, read from its version register by [`init`] (0 before).
    pub pins: u32,
}

/// What the MADT said, kept for dom0's vIOAPICs and MADT.
pub struct Platform {
    pub ioapics: ArrayVec<HostIoApic, { acpi_host::MAX_MADT_IOAPICS }>,
    pub overrides: ArrayVec<acpi_host::MadtOverride, { acpi_host::MAX_MADT_OVERRIDES }>,
}

static RECORDED: Once<Platform> = Once::new();
static PLATFORM: Once<Platform> = Once::new();

/// The RTE CPU 0 should hold for each GSI (bit 16 set: masked), what the handler masked
/// (level pins waiting for dom0's EOI), what is to be rewritten, and what fired.
#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const M: AtomicU64 = AtomicU64::new(RTE_MASKED);
static WANTED: [AtomicU64; MAX_GSIS] = [M; MAX_GSIS];
static IRQ_MASKED: [AtomicU64; WORDS] = [Z; WORDS];
static DIRTY: [AtomicU64; WORDS] = [Z; WORDS];
static ANY_DIRTY: AtomicBool = AtomicBool::new(false);
static PENDING: [AtomicU64; WORDS] = [Z; WORDS];
static ANY_PENDING: AtomicBool = AtomicBool::new(false);

/// Notes the I/O APICs and overrides of the host's MADT. Call once, before `mm::paging`.
pub fn record(madt: &acpi_host::Madt) {
    RECORDED.call_once(|| Platform {
        ioapics: madt
            .ioapics
            .iter()
            .filter(|a| a.addr & 0xfff == 0)
            .map(|a| HostIoApic {
                id: a.id,
                addr: u64::from(a.addr),
                gsi_base: a.gsi_base,
                pins: 0,
            })
            .collect(),
        overrides: madt.overrides.clone(),
    });
}

/// The register pages `mm::paging` maps uncacheable into the direct map.
pub fn mmio_pages() -> impl Iterator<Item = u64> {
    RECORDED
        .get()
        .into_iter()
        .flat_map(|p| p.ioapics.iter().map(|a| a.addr))
}

fn reg_ptr(addr: u64, offset: u64) -> *mut u32 {
    crate::mm::phys::to_virt(addr + offset).cast::<u32>()
}

/// Reads register `index` of the I/O APIC at `addr`. Boot CPU only, interrupts disabled.
fn read(addr: u64, index: u32) -> u32 {
    // SAFETY: `addr` is a recorded I/O APIC page, mapped uncacheable by `mm::paging`; only
    // CPU 0 reaches here, with interrupts off or from its own interrupt handler, which
    // cannot interrupt this pair of accesses (host code runs with IF clear).
    unsafe {
        reg_ptr(addr, 0).write_volatile(index);
        reg_ptr(addr, 0x10).read_volatile()
    }
}

/// Writes register `index`. As for [`read`].
fn write(addr: u64, index: u32, value: u32) {
    // SAFETY: as for `read`.
    unsafe {
        reg_ptr(addr, 0).write_volatile(index);
        reg_ptr(addr, 0x10).write_volatile(value);
    }
}

fn write_rte(addr: u64, pin: u32, rte: u64) {
    // Masked first, so the half-written entry never fires.
    write(addr, 0x10 + 2 * pin, RTE_MASKED as u32);
    write(addr, 0x11 + 2 * pin, (rte >> 32) as u32);
    write(addr, 0x10 + 2 * pin, rte as u32);
}

/// Reads each I/O APIC's pin count and masks every pin. Boot CPU, after paging, before any
/// guest runs.
pub fn init() {
    let Some(rec) = RECORDED.get() else {
        return;
    };
    let mut ioapics = ArrayVec::new();
    for a in &rec.ioapics {
        let version = read(a.addr, 1);
        if version == u32::MAX {
            log::warn!("I/O APIC {} at {:#x}: no answer; ignored", a.id, a.addr);
            continue;
        }
        let pins = ((version >> 16) & 0xff) + 1;
        for pin in 0..pins {
            write_rte(a.addr, pin, RTE_MASKED);
        }
        log::info!(
            "I/O APIC {} at {:#x}: version {:#x}, GSIs {}..{}, all masked",
            a.id,
            a.addr,
            version & 0xff,
            a.gsi_base,
            a.gsi_base.saturating_add(pins) - 1
        );
        ioapics.push(HostIoApic { pins, ..*a });
    }
    PLATFORM.call_once(|| Platform {
        ioapics,
        overrides: rec.overrides.clone(),
    });
}

/// The host's I/O APICs (pin counts known) and overrides, once [`init`] ran.
pub fn platform() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// The I/O APIC page and pin of `gsi`.
fn locate(gsi: u32) -> Option<(u64, u32)> {
    let p = PLATFORM.get()?;
    p.ioapics.iter().find_map(|a| {
        let pin = gsi.checked_sub(a.gsi_base)?;
        (pin < a.pins).then_some((a.addr, pin))
    })
}

/// Whether `gsi` can be bound at all (on a host I/O APIC, below [`MAX_GSIS`]).
pub fn bindable(gsi: u32) -> bool {
    (gsi as usize) < MAX_GSIS && locate(gsi).is_some()
}

fn set_bit(words: &[AtomicU64], n: usize) {
    words[n / 64].fetch_or(1 << (n % 64), Ordering::SeqCst);
}

fn mark_dirty(gsi: usize) {
    set_bit(&DIRTY, gsi);
    ANY_DIRTY.store(true, Ordering::SeqCst);
    if percpu::this().index != 0 {
        super::smp::poke(0, percpu::softirq::EVENT_CHECK);
    }
}

/// Programs `gsi` to its hypervisor vector on the boot CPU with this trigger mode and
/// polarity, masked or not, and waits until CPU 0 has (a cross-CPU call). Any CPU, host
/// context, no lock held.
pub fn program(gsi: u32, level: bool, active_low: bool, masked: bool) {
    if !bindable(gsi) {
        return;
    }
    let Some(cpu0) = percpu::cpu(0) else {
        return;
    };
    let mut rte = u64::from(VECTOR_BASE) + u64::from(gsi);
    rte |= u64::from(cpu0.apic_id.load(Ordering::Relaxed) as u8) << 56;
    if level {
        rte |= RTE_LEVEL;
    }
    if active_low {
        rte |= RTE_ACTIVE_LOW;
    }
    if masked {
        rte |= RTE_MASKED;
    }
    WANTED[gsi as usize].store(rte, Ordering::SeqCst);
    mark_dirty(gsi as usize);
    // Written before dom0's RTE write completes: an edge that arrives while the hardware
    // pin is still masked is dropped (82093AA; QEMU does so), and a driver starts its
    // device right after unmasking (the IDE IDENTIFY of `pci/dom0-ide-pio` lost its
    // interrupt when CPU 0 applied the entry later).
    if super::smp::call_on(
        0,
        &|| {
            apply();
            0
        },
        1000,
    )
    .is_err()
    {
        log::warn!("I/O APIC: CPU 0 did not apply GSI {gsi}'s entry within 1 s; it will later");
    }
}

/// Masks every pin given out (the control domain is gone). Any CPU, host context.
pub fn mask_all() {
    for (gsi, w) in WANTED.iter().enumerate() {
        if w.fetch_or(RTE_MASKED, Ordering::SeqCst) & RTE_MASKED == 0 {
            mark_dirty(gsi);
        }
    }
}

/// After dom0's EOI of a level interrupt: lets the handler's mask go. Any CPU.
pub fn unmask_after_eoi(gsi: u32) {
    let g = gsi as usize;
    if g >= MAX_GSIS {
        return;
    }
    IRQ_MASKED[g / 64].fetch_and(!(1 << (g % 64)), Ordering::SeqCst);
    mark_dirty(g);
}

/// Writes the entries other CPUs asked for. Does something only on the boot CPU.
pub fn apply() {
    if percpu::this().index != 0 || !ANY_DIRTY.swap(false, Ordering::SeqCst) {
        return;
    }
    for (w, word) in DIRTY.iter().enumerate() {
        let mut bits = word.swap(0, Ordering::SeqCst);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let gsi = w * 64 + b;
            let Some((addr, pin)) = locate(gsi as u32) else {
                continue;
            };
            let mut rte = WANTED[gsi].load(Ordering::SeqCst);
            if IRQ_MASKED[w].load(Ordering::SeqCst) & (1 << b) != 0 {
                rte |= RTE_MASKED;
            }
            write_rte(addr, pin, rte);
        }
    }
}

/// Whether `vector` is a device interrupt vector.
pub fn owns_vector(vector: u8) -> bool {
    vector >= VECTOR_BASE && usize::from(vector - VECTOR_BASE) < MAX_GSIS
}

/// The interrupt handler for a device vector: no locks, no logging. Runs on CPU 0 (the
/// only destination programmed); if it ever runs elsewhere, it only records the GSI.
pub fn interrupt(vector: u8) {
    let gsi = usize::from(vector - VECTOR_BASE);
    let rte = WANTED[gsi].load(Ordering::SeqCst);
    // A level pin is masked before the EOI, whose broadcast clears its Remote IRR: the
    // line is still asserted, and unmasked it would fire again at once.
    if rte & RTE_LEVEL != 0 {
        set_bit(&IRQ_MASKED, gsi);
        if percpu::this().index == 0 {
            if let Some((addr, pin)) = locate(gsi as u32) {
                write(addr, 0x10 + 2 * pin, (rte | RTE_MASKED) as u32);
            }
        } else {
            set_bit(&DIRTY, gsi);
            ANY_DIRTY.store(true, Ordering::SeqCst);
        }
    }
    super::lapic::eoi();
    set_bit(&PENDING, gsi);
    ANY_PENDING.store(true, Ordering::SeqCst);
    percpu::raise_softirq(percpu::softirq::EVENT_CHECK);
}

/// GSIs that fired since the last call (bit n of word w: GSI 64w + n), for host context.
pub fn take_pending() -> Option<[u64; WORDS]> {
    if !ANY_PENDING.swap(false, Ordering::SeqCst) {
        return None;
    }
    let mut out = [0u64; WORDS];
    for (o, w) in out.iter_mut().zip(PENDING.iter()) {
        *o = w.swap(0, Ordering::SeqCst);
    }
    Some(out)
}
