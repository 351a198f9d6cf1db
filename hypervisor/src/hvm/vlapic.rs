//! A virtual local APIC in x2APIC mode, reached only through MSRs 0x800–0x8FF.
//!
//! Guests start with x2APIC already enabled (IA32_APIC_BASE.EXTD set), so Linux never
//! touches the xAPIC MMIO page and no MMIO emulation is needed. The model is what a PVH
//! kernel uses: identification, TPR/PPR, EOI, the spurious-vector register, LVTs that are
//! stored but never fire (the clock is Xen's), ESR, and the ICR/SELF_IPI for fixed IPIs
//! to itself. Interrupts are tracked in IRR/ISR bitmaps and delivered by the caller
//! through [`Vlapic::next_interrupt`] / [`Vlapic::ack`].

/// The LAPIC version register: version 0x14, 6 LVT entries (max LVT index 5).
const VERSION: u64 = 0x0005_0014;
const LVT_MASKED: u32 = 1 << 16;
/// MSR index of the first x2APIC register.
pub const X2APIC_MSR_BASE: u32 = 0x800;

/// What a register write asks the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicEffect {
    /// Nothing beyond the register update.
    None,
    /// A fixed IPI to another vCPU (by x2APIC id).
    Ipi { dest: u32, vector: u8 },
    /// An NMI, INIT or SIPI to another vCPU (SMP bring-up and shutdown): mode and target.
    Special { dest: u32, mode: u8, vector: u8 },
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Vlapic {
    id: u32,
    tpr: u32,
    svr: u32,
    esr: u32,
    icr: u64,
    /// LVT CMCI, timer, thermal, PMC, LINT0, LINT1, error.
    lvt: [u32; 7],
    tmict: u32,
    tdcr: u32,
    irr: [u32; 8],
    isr: [u32; 8],
}

fn bit(regs: &[u32; 8], v: u8) -> bool {
    regs[usize::from(v / 32)] & (1 << (v % 32)) != 0
}

fn set(regs: &mut [u32; 8], v: u8, on: bool) {
    let w = &mut regs[usize::from(v / 32)];
    if on {
        *w |= 1 << (v % 32);
    } else {
        *w &= !(1 << (v % 32));
    }
}

fn highest(regs: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| regs[i] != 0)
        .map(|i| (i * 32 + 31 - regs[i].leading_zeros() as usize) as u8)
}

impl Vlapic {
    /// A reset APIC with x2APIC id `id` (equal to the vCPU id and the MADT APIC id).
    pub fn new(id: u32) -> Vlapic {
        Vlapic {
            id,
            tpr: 0,
            svr: 0xff,
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; 7],
            tmict: 0,
            tdcr: 0,
            irr: [0; 8],
            isr: [0; 8],
        }
    }

    /// Whether `msr` is in the x2APIC range this model answers.
    pub fn owns(msr: u32) -> bool {
        (X2APIC_MSR_BASE..X2APIC_MSR_BASE + 0x100).contains(&msr)
    }

    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, u32::from);
        if (self.tpr & 0xf0) >= (isrv & 0xf0) {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// RDMSR of an x2APIC register; None means #GP (reserved or write-only register).
    pub fn read(&self, msr: u32) -> Option<u64> {
        let r = msr.checked_sub(X2APIC_MSR_BASE)?;
        Some(u64::from(match r {
            0x02 => self.id,
            0x03 => return Some(VERSION),
            0x08 => self.tpr,
            0x0a => self.ppr(),
            // Logical destination in x2APIC mode is derived from the id (cluster, bit).
            0x0d => ((self.id >> 4) << 16) | (1 << (self.id & 0xf)),
            0x0f => self.svr,
            0x10..=0x17 => self.isr[(r - 0x10) as usize],
            0x18..=0x1f => 0, // TMR: every interrupt here is edge-triggered
            0x20..=0x27 => self.irr[(r - 0x20) as usize],
            0x28 => self.esr,
            0x2f => self.lvt[0],
            0x30 => return Some(self.icr),
            0x32..=0x37 => self.lvt[(r - 0x31) as usize],
            0x38 => self.tmict,
            0x39 => 0, // current count: the timer never runs
            0x3e => self.tdcr,
            _ => return None,
        }))
    }

    /// WRMSR of an x2APIC register; Err(()) means #GP.
    pub fn write(&mut self, msr: u32, value: u64) -> Result<ApicEffect, ()> {
        let r = msr.checked_sub(X2APIC_MSR_BASE).ok_or(())?;
        // Only ICR is 64 bits wide; writing reserved upper bits elsewhere is a #GP.
        if r != 0x30 && value >> 32 != 0 {
            return Err(());
        }
        let v = value as u32;
        match r {
            0x08 => self.tpr = v & 0xff,
            0x0b => {
                if v != 0 {
                    return Err(());
                }
                if let Some(vec) = highest(&self.isr) {
                    set(&mut self.isr, vec, false);
                }
            }
            0x0f => self.svr = v & 0x13ff,
            0x28 => self.esr = 0,
            0x2f => self.lvt[0] = v,
            0x30 => return Ok(self.write_icr(value)),
            0x32..=0x37 => self.lvt[(r - 0x31) as usize] = v,
            0x38 => self.tmict = v,
            0x3e => self.tdcr = v & 0xb,
            0x3f => {
                self.raise(v as u8);
            }
            _ => return Err(()),
        }
        Ok(ApicEffect::None)
    }

    fn write_icr(&mut self, value: u64) -> ApicEffect {
        self.icr = value & !(1 << 12); // delivery status always idle
        let vector = value as u8;
        let mode = ((value >> 8) & 7) as u8;
        let shorthand = (value >> 18) & 3;
        let dest = (value >> 32) as u32;
        let to_self = shorthand == 1 || (shorthand == 0 && dest == self.id) || shorthand == 2;
        match mode {
            0 if to_self => {
                self.raise(vector);
                if shorthand == 2 {
                    // "all including self": others get it too.
                    return ApicEffect::Ipi {
                        dest: u32::MAX,
                        vector,
                    };
                }
                ApicEffect::None
            }
            0 => ApicEffect::Ipi {
                dest: if shorthand == 3 { u32::MAX } else { dest },
                vector,
            },
            _ => ApicEffect::Special { dest, mode, vector },
        }
    }

    /// Makes `vector` pending (from an IPI or a self-IPI). Vectors below 16 are illegal
    /// and only set the error status.
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.esr |= 1 << 6; // send illegal vector
            return;
        }
        set(&mut self.irr, vector, true);
    }

    /// The highest pending vector that the current priority lets through, if the APIC is
    /// software-enabled.
    pub fn next_interrupt(&self) -> Option<u8> {
        if self.svr & (1 << 8) == 0 {
            return None;
        }
        let v = highest(&self.irr)?;
        (u32::from(v) & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// Records that `vector` was injected: it moves from IRR to ISR until the guest's EOI.
    pub fn ack(&mut self, vector: u8) {
        set(&mut self.irr, vector, false);
        set(&mut self.isr, vector, true);
    }

    /// Whether `vector` is pending.
    pub fn is_pending(&self, vector: u8) -> bool {
        bit(&self.irr, vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(id: u32) -> Vlapic {
        let mut a = Vlapic::new(id);
        a.write(0x80f, 0x1ff).unwrap();
        a
    }

    #[test]
    fn identification_registers() {
        let a = Vlapic::new(3);
        assert_eq!(a.read(0x802), Some(3));
        assert_eq!(a.read(0x803), Some(0x50014));
        assert_eq!(a.read(0x80d), Some(1 << 3));
        assert_eq!(a.read(0x80f), Some(0xff));
        assert_eq!(
            a.read(0x832),
            Some(u64::from(LVT_MASKED)),
            "timer LVT starts masked"
        );
    }

    #[test]
    fn reserved_and_read_only_registers_fault() {
        let mut a = Vlapic::new(0);
        assert_eq!(a.read(0x801), None);
        assert_eq!(a.read(0x80b), None, "EOI is write-only");
        assert_eq!(a.write(0x802, 1), Err(()), "ID is read-only in x2APIC mode");
        assert_eq!(a.write(0x80b, 1), Err(()), "EOI takes only 0");
        assert_eq!(a.write(0x808, 1 << 32), Err(()));
        assert_eq!(a.write(0x7ff, 0), Err(()));
    }

    #[test]
    fn self_ipi_is_delivered_in_priority_order_and_eoi_retires_it() {
        let mut a = enabled(0);
        a.write(0x83f, 0x40).unwrap();
        a.write(0x83f, 0xf6).unwrap();
        assert_eq!(a.next_interrupt(), Some(0xf6));
        a.ack(0xf6);
        assert_eq!(a.read(0x810 + 7), Some(1 << (0xf6 - 0xe0)), "in ISR");
        assert_eq!(
            a.next_interrupt(),
            None,
            "0x40 is below the in-service priority"
        );
        a.write(0x80b, 0).unwrap();
        assert_eq!(a.next_interrupt(), Some(0x40));
    }

    #[test]
    fn tpr_masks_lower_classes() {
        let mut a = enabled(0);
        a.write(0x808, 0x50).unwrap();
        a.raise(0x45);
        assert_eq!(a.next_interrupt(), None);
        a.raise(0x61);
        assert_eq!(a.next_interrupt(), Some(0x61));
        assert_eq!(a.read(0x80a), Some(0x50), "PPR follows TPR");
    }

    #[test]
    fn software_disabled_apic_delivers_nothing() {
        let mut a = Vlapic::new(0);
        a.raise(0x80);
        assert_eq!(a.next_interrupt(), None);
    }

    #[test]
    fn icr_self_and_others() {
        let mut a = enabled(2);
        assert_eq!(
            a.write(0x830, (2u64 << 32) | 0xf7).unwrap(),
            ApicEffect::None
        );
        assert!(a.is_pending(0xf7));
        assert_eq!(
            a.write(0x830, (5u64 << 32) | 0xf8).unwrap(),
            ApicEffect::Ipi {
                dest: 5,
                vector: 0xf8
            }
        );
        assert_eq!(
            a.write(0x830, (3 << 18) | 0xf8).unwrap(),
            ApicEffect::Ipi {
                dest: u32::MAX,
                vector: 0xf8
            }
        );
        assert_eq!(
            a.write(0x830, (1u64 << 32) | (4 << 8)).unwrap(),
            ApicEffect::Special {
                dest: 1,
                mode: 4,
                vector: 0
            },
            "NMI"
        );
        assert_eq!(
            a.read(0x830).unwrap() & (1 << 12),
            0,
            "delivery status idle"
        );
    }

    #[test]
    fn illegal_vector_sets_esr() {
        let mut a = enabled(0);
        a.write(0x83f, 3).unwrap();
        assert_eq!(a.next_interrupt(), None);
        assert_ne!(a.read(0x828).unwrap(), 0);
        a.write(0x828, 0).unwrap();
        assert_eq!(a.read(0x828), Some(0));
    }
}
