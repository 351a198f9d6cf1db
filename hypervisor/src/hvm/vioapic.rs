//! The control domain's virtual I/O APICs: one per host I/O APIC, at the host's address,
//! with its GSI base and pin count, as Xen gives a PVH hardware domain (Xen
//! `xen/arch/x86/hvm/vioapic.c`). This module is the register model only (host-tested);
//! binding a pin to the physical one and delivering interrupts is `domain::devirq`.
//!
//! Registers (82093AA datasheet, version 0x11): IOREGSEL at offset 0x00 (the index) and
//! IOWIN at 0x10 (the window), both 32-bit; through the window, 0x00 the id (bits 24-27),
//! 0x01 the version (0x11, highest redirection entry in bits 16-23), 0x02 the arbitration
//! id, 0x10 + 2n / 0x11 + 2n the low / high halves of redirection entry (RTE) n. Version
//! 0x11 has no EOI register: a level-triggered pin's Remote IRR is cleared by the local
//! APIC's EOI of its vector (broadcast), which is what Linux expects from such an I/O APIC.
//!
//! Every RTE written is kept only in its defined bits (vector, delivery mode, destination
//! mode, polarity, trigger mode, mask, destination); delivery status and Remote IRR are
//! read-only. Whether an RTE can be delivered is checked when it fires ([`Rte::delivery`]):
//! fixed or lowest-priority delivery of a vector 16..=255 only; SMI, NMI, INIT, ExtINT and
//! the reserved modes are refused (the interrupt is dropped).

/// Pins modelled per I/O APIC at most (the host's count is clamped to this).
pub const MAX_PINS: usize = 64;
/// The version register's value: 82093AA-compatible (no EOI register).
pub const VERSION: u32 = 0x11;
/// Bytes of guest-physical space each I/O APIC decodes (its page).
pub const MMIO_SIZE: u64 = 0x1000;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_RTE0: u32 = 0x10;

const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_MODE: u64 = 0x7 << 8;
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_POLARITY_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST: u64 = 0xff << 56;
/// The bits a guest may set.
const RTE_WRITABLE: u64 = RTE_VECTOR
    | RTE_DELIVERY_MODE
    | RTE_DEST_LOGICAL
    | RTE_POLARITY_LOW
    | RTE_LEVEL
    | RTE_MASKED
    | RTE_DEST;

/// One redirection table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rte(pub u64);

/// Where and how an RTE delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    /// APIC id (physical mode) or message destination address (logical mode).
    pub dest: u8,
    pub logical: bool,
    /// Lowest priority: one of the destinations takes it.
    pub lowest_priority: bool,
}

impl Rte {
    /// After reset: masked, everything else zero.
    pub const RESET: Rte = Rte(RTE_MASKED);

    pub fn masked(self) -> bool {
        self.0 & RTE_MASKED != 0
    }
    pub fn level(self) -> bool {
        self.0 & RTE_LEVEL != 0
    }
    pub fn active_low(self) -> bool {
        self.0 & RTE_POLARITY_LOW != 0
    }
    pub fn remote_irr(self) -> bool {
        self.0 & RTE_REMOTE_IRR != 0
    }
    pub fn vector(self) -> u8 {
        self.0 as u8
    }

    /// How this entry delivers, or None if it cannot: a delivery mode other than fixed
    /// (0) or lowest priority (1), or a vector below 16 (illegal for fixed interrupts).
    pub fn delivery(self) -> Option<Delivery> {
        let mode = (self.0 & RTE_DELIVERY_MODE) >> 8;
        let vector = self.vector();
        if mode > 1 || vector < 16 {
            return None;
        }
        Some(Delivery {
            vector,
            dest: (self.0 >> 56) as u8,
            logical: self.0 & RTE_DEST_LOGICAL != 0,
            lowest_priority: mode == 1,
        })
    }
}

/// What a register write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    None,
    /// RTE `pin` changed (its physical pin must follow: mask, trigger, polarity).
    Rte(u8),
}

/// What became of an interrupt on a pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Deliver it so.
    Deliver(Delivery),
    /// Masked, or a level pin whose previous interrupt dom0 has not EOI'd yet: dropped
    /// (a level line stays asserted and fires again once unmasked).
    Held,
    /// The RTE cannot be delivered (see [`Rte::delivery`]): dropped.
    Refused,
}

/// One virtual I/O APIC.
#[derive(Clone, Debug)]
pub struct Vioapic {
    /// Guest-physical (= host) address of its registers.
    pub base: u64,
    /// Its first GSI.
    pub gsi_base: u32,
    id: u8,
    pins: u8,
    ioregsel: u32,
    rte: [Rte; MAX_PINS],
}

impl Vioapic {
    /// An I/O APIC after reset: every pin masked. `pins` is clamped to 1..=[`MAX_PINS`].
    pub fn new(id: u8, base: u64, gsi_base: u32, pins: u32) -> Vioapic {
        Vioapic {
            base,
            gsi_base,
            id: id & 0xf,
            pins: pins.clamp(1, MAX_PINS as u32) as u8,
            ioregsel: 0,
            rte: [Rte::RESET; MAX_PINS],
        }
    }

    /// Pins it has.
    pub fn pins(&self) -> u8 {
        self.pins
    }

    /// Whether `gpa` is in its register page.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa.checked_sub(self.base)
            .is_some_and(|off| off < MMIO_SIZE)
    }

    /// Its pin for `gsi`, if it has one.
    pub fn pin_of(&self, gsi: u32) -> Option<u8> {
        let pin = gsi.checked_sub(self.gsi_base)?;
        (pin < u32::from(self.pins)).then_some(pin as u8)
    }

    /// RTE `pin` (a pin it does not have reads as the reset value).
    pub fn rte(&self, pin: u8) -> Rte {
        self.rte
            .get(usize::from(pin))
            .copied()
            .unwrap_or(Rte::RESET)
    }

    fn register(&self, index: u32) -> u32 {
        match index {
            REG_ID | REG_ARB => u32::from(self.id) << 24,
            REG_VERSION => VERSION | (u32::from(self.pins) - 1) << 16,
            i if i >= REG_RTE0 && ((i - REG_RTE0) / 2) < u32::from(self.pins) => {
                let rte = self.rte[((i - REG_RTE0) / 2) as usize].0;
                if i & 1 == 0 {
                    rte as u32
                } else {
                    (rte >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// A read of `size` bytes at `offset` into its page: IOREGSEL and IOWIN (any byte
    /// inside either, as the data lines carry the dword); elsewhere zero.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        let dword = match offset & !3 {
            0x00 => self.ioregsel,
            0x10 => self.register(self.ioregsel),
            _ => 0,
        };
        let shifted = u64::from(dword) >> ((offset & 3) * 8);
        match size {
            1 => shifted & 0xff,
            2 => shifted & 0xffff,
            _ => shifted & 0xffff_ffff,
        }
    }

    /// A write of `size` bytes at `offset`: only whole 32-bit writes to IOREGSEL (its low
    /// byte is kept) and IOWIN count, as the 82093AA requires; others are dropped.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) -> WriteEffect {
        if size != 4 && size != 8 {
            return WriteEffect::None;
        }
        let value = value as u32;
        match offset {
            0x00 => {
                self.ioregsel = value & 0xff;
                WriteEffect::None
            }
            0x10 => self.write_register(value),
            _ => WriteEffect::None,
        }
    }

    fn write_register(&mut self, value: u32) -> WriteEffect {
        match self.ioregsel {
            REG_ID => {
                self.id = ((value >> 24) & 0xf) as u8;
                WriteEffect::None
            }
            i if i >= REG_RTE0 && ((i - REG_RTE0) / 2) < u32::from(self.pins) => {
                let pin = (i - REG_RTE0) / 2;
                let old = self.rte[pin as usize].0;
                let merged = if i & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                let mut new = (merged & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if new & RTE_LEVEL == 0 {
                    // Remote IRR means nothing for an edge pin (Xen clears it too).
                    new &= !RTE_REMOTE_IRR;
                }
                self.rte[pin as usize] = Rte(new);
                if new == old {
                    WriteEffect::None
                } else {
                    WriteEffect::Rte(pin as u8)
                }
            }
            _ => WriteEffect::None,
        }
    }

    /// The physical pin behind `pin` fired. A level pin delivers once and then holds its
    /// Remote IRR until [`Vioapic::eoi`] of its vector.
    pub fn fire(&mut self, pin: u8) -> Fired {
        let Some(rte) = self
            .rte
            .get_mut(usize::from(pin))
            .filter(|_| pin < self.pins)
        else {
            return Fired::Refused;
        };
        if rte.masked() || (rte.level() && rte.remote_irr()) {
            return Fired::Held;
        }
        let Some(d) = rte.delivery() else {
            return Fired::Refused;
        };
        if rte.level() {
            rte.0 |= RTE_REMOTE_IRR;
        }
        Fired::Deliver(d)
    }

    /// A local APIC EOI of `vector` (broadcast): clears Remote IRR of every level pin that
    /// delivers that vector. Returns those pins as a bit set (bit n: pin n), for their
    /// physical pins to be unmasked.
    pub fn eoi(&mut self, vector: u8) -> u64 {
        let mut done = 0u64;
        for (pin, rte) in self.rte.iter_mut().enumerate().take(usize::from(self.pins)) {
            if rte.level() && rte.remote_irr() && rte.vector() == vector {
                rte.0 &= !RTE_REMOTE_IRR;
                done |= 1 << pin;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel_write(a: &mut Vioapic, index: u32, value: u32) -> WriteEffect {
        a.mmio_write(0, 4, u64::from(index));
        a.mmio_write(0x10, 4, u64::from(value))
    }

    fn sel_read(a: &mut Vioapic, index: u32) -> u32 {
        a.mmio_write(0, 4, u64::from(index));
        a.mmio_read(0x10, 4) as u32
    }

    #[test]
    fn identification_registers() {
        let mut a = Vioapic::new(2, 0xfec0_0000, 0, 24);
        assert_eq!(sel_read(&mut a, 0), 2 << 24);
        assert_eq!(sel_read(&mut a, 1), 0x0017_0011, "24 pins, version 0x11");
        assert_eq!(sel_read(&mut a, 2), 2 << 24);
        assert_eq!(a.mmio_read(0, 4), 2, "IOREGSEL reads back");
        assert_eq!(sel_read(&mut a, 0x3f), 0, "beyond pin 23 reads zero");
        assert_eq!(sel_read(&mut a, 0x40), 0);
        sel_write(&mut a, 0, 0x0f00_0000);
        assert_eq!(sel_read(&mut a, 0), 0x0f00_0000);
        // A clamped pin count.
        let mut big = Vioapic::new(0, 0xfec0_0000, 0, 240);
        assert_eq!(sel_read(&mut big, 1) >> 16 & 0xff, MAX_PINS as u32 - 1);
        assert!(a.contains(0xfec0_0fff) && !a.contains(0xfec0_1000) && !a.contains(0xfebf_ffff));
    }

    #[test]
    fn pins_start_masked_and_rtes_keep_only_defined_bits() {
        let mut a = Vioapic::new(0, 0xfec0_0000, 0, 24);
        for pin in 0..24 {
            assert_eq!(a.rte(pin), Rte::RESET);
            assert_eq!(sel_read(&mut a, 0x10 + 2 * u32::from(pin)), 1 << 16);
        }
        // Delivery status (12), Remote IRR (14) and bits 17-31 are not writable; nor the
        // high half's bits 32-55.
        assert_eq!(
            sel_write(&mut a, 0x10 + 28, 0xffff_ffff),
            WriteEffect::Rte(14)
        );
        assert_eq!(sel_read(&mut a, 0x10 + 28), 0x0001_afff);
        assert_eq!(
            sel_write(&mut a, 0x11 + 28, 0xffff_ffff),
            WriteEffect::Rte(14)
        );
        assert_eq!(sel_read(&mut a, 0x11 + 28), 0xff00_0000);
        // Writing the same value again changes nothing.
        assert_eq!(sel_write(&mut a, 0x11 + 28, 0xff00_0000), WriteEffect::None);
        // Beyond the pins, and partial writes: dropped.
        assert_eq!(sel_write(&mut a, 0x10 + 48, 0), WriteEffect::None);
        a.mmio_write(0, 4, 0x10);
        assert_eq!(a.mmio_write(0x10, 2, 0), WriteEffect::None);
        assert_eq!(a.mmio_write(0x10, 1, 0), WriteEffect::None);
        assert_eq!(sel_read(&mut a, 0x10), 1 << 16);
        // Byte reads see the right lane.
        sel_write(&mut a, 0x10, 0x0000_a031);
        a.mmio_write(0, 4, 0x10);
        assert_eq!(a.mmio_read(0x11, 1), 0xa0);
        assert_eq!(a.pin_of(23), Some(23));
        assert_eq!(a.pin_of(24), None);
        let b = Vioapic::new(1, 0xfec0_1000, 24, 24);
        assert_eq!(
            (b.pin_of(23), b.pin_of(24), b.pin_of(47)),
            (None, Some(0), Some(23))
        );
    }

    #[test]
    fn edge_pin_delivers_each_time_and_masked_holds() {
        let mut a = Vioapic::new(0, 0xfec0_0000, 0, 24);
        assert_eq!(a.fire(14), Fired::Held, "masked after reset");
        // Vector 0x3e, fixed, physical destination APIC id 1, edge, active high.
        sel_write(&mut a, 0x11 + 28, 1 << 24);
        assert_eq!(sel_write(&mut a, 0x10 + 28, 0x3e), WriteEffect::Rte(14));
        let d = Delivery {
            vector: 0x3e,
            dest: 1,
            logical: false,
            lowest_priority: false,
        };
        assert_eq!(a.fire(14), Fired::Deliver(d));
        assert_eq!(a.fire(14), Fired::Deliver(d), "edge: no Remote IRR");
        assert_eq!(a.eoi(0x3e), 0);
        assert_eq!(a.fire(99), Fired::Refused);
    }

    #[test]
    fn level_pin_holds_remote_irr_until_eoi_of_its_vector() {
        let mut a = Vioapic::new(0, 0xfec0_0000, 0, 24);
        // GSI 9 (the SCI): vector 0x41, lowest priority, logical destination 0x3, level,
        // active low.
        sel_write(&mut a, 0x11 + 18, 0x03 << 24);
        sel_write(
            &mut a,
            0x10 + 18,
            0x41 | 1 << 8 | 1 << 11 | 1 << 13 | 1 << 15,
        );
        let Fired::Deliver(d) = a.fire(9) else {
            panic!("not delivered");
        };
        assert_eq!(
            (d.vector, d.dest, d.logical, d.lowest_priority),
            (0x41, 3, true, true)
        );
        assert!(a.rte(9).remote_irr());
        assert_eq!(
            sel_read(&mut a, 0x10 + 18) & 1 << 14,
            1 << 14,
            "Remote IRR reads back"
        );
        assert_eq!(a.fire(9), Fired::Held);
        // A guest write cannot clear Remote IRR; an EOI of another vector does not either.
        sel_write(
            &mut a,
            0x10 + 18,
            0x41 | 1 << 8 | 1 << 11 | 1 << 13 | 1 << 15,
        );
        assert!(a.rte(9).remote_irr());
        assert_eq!(a.eoi(0x42), 0);
        assert_eq!(a.eoi(0x41), 1 << 9);
        assert!(!a.rte(9).remote_irr());
        assert!(matches!(a.fire(9), Fired::Deliver(_)));
        // Switching the pin to edge drops Remote IRR.
        sel_write(&mut a, 0x10 + 18, 0x41);
        assert!(!a.rte(9).remote_irr());
    }

    #[test]
    fn undeliverable_rtes_are_refused() {
        let mut a = Vioapic::new(0, 0xfec0_0000, 0, 24);
        // Vector below 16, then SMI (2), NMI (4), INIT (5), ExtINT (7), reserved (3, 6).
        sel_write(&mut a, 0x10, 0x0f);
        assert_eq!(a.fire(0), Fired::Refused);
        for mode in [2u32, 3, 4, 5, 6, 7] {
            sel_write(&mut a, 0x10, 0x30 | mode << 8);
            assert_eq!(a.fire(0), Fired::Refused, "mode {mode}");
        }
        // A refused level pin does not latch Remote IRR.
        sel_write(&mut a, 0x10, 0x30 | 7 << 8 | 1 << 15);
        assert_eq!(a.fire(0), Fired::Refused);
        assert!(!a.rte(0).remote_irr());
    }
}
