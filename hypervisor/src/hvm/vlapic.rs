//! A virtual local APIC, in xAPIC mode (registers in the MMIO page at the APIC base) or
//! x2APIC mode (MSRs 0x800–0x8FF), switched through IA32_APIC_BASE with the transitions
//! the SDM allows (vol. 3, 11.12.5): disabled ⇄ xAPIC → x2APIC → disabled; x2APIC →
//! xAPIC and disabled → x2APIC are #GP, as is any reserved bit.
//!
//! vCPUs start in xAPIC mode at 0xfee00000, as Xen starts a PVH vCPU; a kernel that finds
//! x2APIC in CPUID switches (Linux does, early). The model is what a PVH kernel uses:
//! identification, TPR/PPR, EOI, the spurious-vector register, the timer (one-shot and
//! periodic, counting at 1 GHz before the divider, as Xen's virtual APIC bus; the other
//! LVTs are stored but never fire), ESR, and the ICR/SELF_IPI for fixed IPIs, INIT and
//! SIPI. The model keeps no clock of its own: the caller passes system time in with
//! [`Vlapic::advance`] before every register access and before entering the guest. Interrupts are tracked in IRR/ISR bitmaps and delivered by the caller through
//! [`Vlapic::next_interrupt`] / [`Vlapic::ack`].

/// The LAPIC version register: version 0x14, 6 LVT entries (max LVT index 5).
const VERSION: u64 = 0x0005_0014;
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode field (bits 17-18): 0 one-shot, 1 periodic (2, TSC-deadline, is not
/// offered: CPUID hides it).
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// The shortest period a periodic timer re-arms with (as Xen bounds it), so a guest
/// cannot make the hypervisor re-arm a timer every nanosecond.
pub const MIN_PERIOD_NS: u64 = 100_000;
/// MSR index of the first x2APIC register.
pub const X2APIC_MSR_BASE: u32 = 0x800;

/// IA32_APIC_BASE bits.
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// The architectural default APIC base address.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;

/// The APIC's mode, from IA32_APIC_BASE's EN and EXTD bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disabled,
    XApic,
    X2Apic,
}

/// What a register write asks the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicEffect {
    /// Nothing beyond the register update.
    None,
    /// A fixed IPI to another vCPU (by x2APIC id).
    Ipi { dest: u32, vector: u8 },
    /// An INIT or SIPI to another vCPU (SMP bring-up): mode and target.
    Special { dest: u32, mode: u8, vector: u8 },
    /// An NMI: to other vCPUs (`Some(id)`, `Some(u32::MAX)` for all of them) and/or to
    /// the sender itself.
    Nmi { others: Option<u32>, to_self: bool },
    /// A fixed IPI to the other vCPUs whose logical APIC id matches the message
    /// destination address `mda` (the sender, if it matches, has the vector already).
    LogicalIpi { mda: u32, vector: u8 },
    /// An NMI to the other vCPUs whose logical APIC id matches `mda`, and to the sender
    /// if it matches too.
    LogicalNmi { mda: u32, to_self: bool },
}

/// What a logical destination is matched against: the receiving APIC's logical id in
/// its own mode (SDM Vol. 3 §10.6.2.2, §10.12.10.2). Other vCPUs keep theirs where a
/// sender can read it (`Vcpu::apic_logical`, as [`LogicalId::to_bits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicalId {
    /// The APIC is disabled: no logical destination reaches it.
    Off,
    /// xAPIC, flat model: LDR bits 24-31 are a bit mask.
    Flat(u8),
    /// xAPIC, cluster model: LDR bits 28-31 the cluster, 24-27 a bit mask in it.
    Cluster(u8),
    /// x2APIC: the LDR derived from the APIC id (cluster in bits 16-31, a bit in 0-15).
    X2(u32),
}

impl LogicalId {
    /// Whether a message destination address `mda` (8 bits in xAPIC mode, 32 in x2APIC
    /// mode) selects this APIC; all ones is the broadcast.
    pub fn matches(self, mda: u32) -> bool {
        let m = mda as u8;
        match self {
            LogicalId::Off => false,
            LogicalId::Flat(l) => m == 0xff || l & m != 0,
            LogicalId::Cluster(l) => m == 0xff || ((l >> 4) == (m >> 4) && l & m & 0xf != 0),
            LogicalId::X2(l) => {
                mda == u32::MAX || ((mda >> 16) == (l >> 16) && mda & l & 0xffff != 0)
            }
        }
    }

    /// Packed for an atomic: kind in bits 32-33, value in bits 0-31.
    pub fn to_bits(self) -> u64 {
        match self {
            LogicalId::Off => 0,
            LogicalId::Flat(l) => 1 << 32 | u64::from(l),
            LogicalId::Cluster(l) => 2 << 32 | u64::from(l),
            LogicalId::X2(l) => 3 << 32 | u64::from(l),
        }
    }

    pub fn from_bits(bits: u64) -> LogicalId {
        match bits >> 32 {
            1 => LogicalId::Flat(bits as u8),
            2 => LogicalId::Cluster(bits as u8),
            3 => LogicalId::X2(bits as u32),
            _ => LogicalId::Off,
        }
    }
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Vlapic {
    id: u32,
    /// IA32_APIC_BASE.
    base: u64,
    /// xAPIC-mode logical destination and destination format (x2APIC derives the LDR).
    ldr: u32,
    dfr: u32,
    /// xAPIC-mode ICR high half (destination in bits 24..31).
    icr_hi: u32,
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
    /// System time (ns) as last passed to [`Vlapic::advance`].
    now: u64,
    /// When the timer next expires (system time), if it runs.
    timer_deadline: Option<u64>,
    /// The vector the last EOI retired, until [`Vlapic::take_eoi`] (for the vIOAPIC's
    /// level-triggered pins).
    eoi: Option<u8>,
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
    /// An APIC after power-up with id `id` (equal to the vCPU id and the MADT APIC id):
    /// xAPIC mode at the default base, the BSP flag on vCPU 0.
    pub fn new(id: u32) -> Vlapic {
        let bsp = if id == 0 { APIC_BASE_BSP } else { 0 };
        Vlapic::with_base(id, APIC_DEFAULT_BASE | APIC_BASE_ENABLE | bsp)
    }

    /// The APIC after an INIT: registers reset, IA32_APIC_BASE (and so the mode) kept.
    pub fn after_init(&self) -> Vlapic {
        Vlapic::with_base(self.id, self.base)
    }

    fn with_base(id: u32, base: u64) -> Vlapic {
        Vlapic {
            id,
            base,
            ldr: 0,
            dfr: u32::MAX,
            icr_hi: 0,
            tpr: 0,
            svr: 0xff,
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; 7],
            tmict: 0,
            tdcr: 0,
            irr: [0; 8],
            isr: [0; 8],
            now: 0,
            timer_deadline: None,
            eoi: None,
        }
    }

    /// Brings the model to system time `now`: an expired timer raises its vector (unless
    /// masked) and a periodic one re-arms past `now`, however many periods were missed.
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        let Some(deadline) = self.timer_deadline else {
            return;
        };
        if deadline > self.now {
            return;
        }
        let lvt = self.lvt[1];
        if lvt & LVT_MASKED == 0 {
            self.raise(lvt as u8);
        }
        self.timer_deadline = if lvt & LVT_TIMER_PERIODIC != 0 {
            let period = self.timer_period().max(MIN_PERIOD_NS);
            let missed = (self.now - deadline) / period + 1;
            Some(deadline.saturating_add(missed.saturating_mul(period)))
        } else {
            None
        };
    }

    /// When the timer next expires (system time), if it runs.
    pub fn timer_expiry(&self) -> Option<u64> {
        self.timer_deadline
    }

    /// The divide configuration's divisor (TDCR bits 0, 1 and 3).
    fn divisor(&self) -> u64 {
        match (self.tdcr & 3) | ((self.tdcr >> 1) & 4) {
            7 => 1,
            v => 2 << v,
        }
    }

    /// One full count of the initial-count register, in ns.
    fn timer_period(&self) -> u64 {
        u64::from(self.tmict) * self.divisor()
    }

    /// The current-count register.
    fn current_count(&self) -> u32 {
        match self.timer_deadline {
            Some(d) if d > self.now => {
                ((d - self.now) / self.divisor()).min(u64::from(self.tmict)) as u32
            }
            _ => 0,
        }
    }

    /// IA32_APIC_BASE as the guest reads it.
    pub fn apic_base(&self) -> u64 {
        self.base
    }

    /// This APIC's logical id, as logical destinations are matched against it.
    pub fn logical_id(&self) -> LogicalId {
        match self.mode() {
            Mode::Disabled => LogicalId::Off,
            Mode::XApic if self.dfr >> 28 == 0xf => LogicalId::Flat((self.ldr >> 24) as u8),
            Mode::XApic => LogicalId::Cluster((self.ldr >> 24) as u8),
            Mode::X2Apic => LogicalId::X2(self.x2apic_ldr()),
        }
    }

    /// The x2APIC logical destination, derived from the id (cluster, bit).
    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xf))
    }

    /// The mode IA32_APIC_BASE selects.
    pub fn mode(&self) -> Mode {
        match (
            self.base & APIC_BASE_ENABLE != 0,
            self.base & APIC_BASE_EXTD != 0,
        ) {
            (false, _) => Mode::Disabled,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        }
    }

    /// The guest-physical page of the xAPIC registers, in xAPIC mode.
    pub fn mmio_page(&self) -> Option<u64> {
        (self.mode() == Mode::XApic).then_some(self.base & !0xfff)
    }

    /// WRMSR IA32_APIC_BASE; Err(()) means #GP: a reserved bit (0-7, 9, or an address
    /// bit at or above `phys_bits`), EXTD without EN, or a transition the SDM forbids
    /// (x2APIC → xAPIC, disabled → x2APIC). The BSP flag is read-only. Disabling the APIC
    /// resets its registers.
    pub fn set_apic_base(&mut self, value: u64, phys_bits: u32) -> Result<(), ()> {
        let addr_mask = (1u64 << phys_bits.clamp(32, 52)) - 1;
        let allowed = (addr_mask & !0xfff) | APIC_BASE_ENABLE | APIC_BASE_EXTD | APIC_BASE_BSP;
        if value & !allowed != 0 {
            return Err(());
        }
        let value = (value & !APIC_BASE_BSP) | (self.base & APIC_BASE_BSP);
        let to = match (value & APIC_BASE_ENABLE != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => Mode::Disabled,
            (false, true) => return Err(()),
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        };
        match (self.mode(), to) {
            (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => return Err(()),
            (_, Mode::Disabled) => *self = Vlapic::with_base(self.id, value),
            _ => self.base = value,
        }
        Ok(())
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
            0x0d => self.x2apic_ldr(),
            0x0f => self.svr,
            0x10..=0x17 => self.isr[(r - 0x10) as usize],
            0x18..=0x1f => 0, // TMR: every interrupt here is edge-triggered
            0x20..=0x27 => self.irr[(r - 0x20) as usize],
            0x28 => self.esr,
            0x2f => self.lvt[0],
            0x30 => return Some(self.icr),
            0x32..=0x37 => self.lvt[(r - 0x31) as usize],
            0x38 => self.tmict,
            0x39 => self.current_count(),
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
                    self.eoi = Some(vec);
                }
            }
            0x0f => {
                self.svr = v & 0x13ff;
                if v & (1 << 8) == 0 {
                    // A software-disabled APIC masks every LVT.
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            0x28 => self.esr = 0,
            0x2f => self.lvt[0] = v,
            0x30 => return Ok(self.write_icr(value)),
            0x32..=0x37 => {
                let masked = if self.svr & (1 << 8) == 0 {
                    LVT_MASKED
                } else {
                    0
                };
                self.lvt[(r - 0x31) as usize] = v | masked;
            }
            0x38 => {
                // Writing the initial count (re)starts the timer; 0 stops it.
                self.tmict = v;
                self.timer_deadline =
                    (v != 0).then(|| self.now.saturating_add(self.timer_period()));
            }
            0x3e => self.tdcr = v & 0xb,
            0x3f => {
                self.raise(v as u8);
            }
            _ => return Err(()),
        }
        Ok(ApicEffect::None)
    }

    fn write_icr(&mut self, value: u64) -> ApicEffect {
        const NMI_MODE: u8 = 4;
        const ICR_LOGICAL: u64 = 1 << 11;
        self.icr = value & !(1 << 12); // delivery status always idle
        let vector = value as u8;
        let mode = ((value >> 8) & 7) as u8;
        let shorthand = (value >> 18) & 3;
        let dest = (value >> 32) as u32;
        if shorthand == 0 && value & ICR_LOGICAL != 0 {
            let to_self = self.logical_id().matches(dest);
            return match mode {
                0 => {
                    if to_self {
                        self.raise(vector);
                    }
                    ApicEffect::LogicalIpi { mda: dest, vector }
                }
                NMI_MODE => ApicEffect::LogicalNmi { mda: dest, to_self },
                _ => {
                    log::debug!(
                        "vlapic {}: IPI mode {mode} to logical {dest:#x} not supported; dropped",
                        self.id
                    );
                    ApicEffect::None
                }
            };
        }
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
            NMI_MODE => ApicEffect::Nmi {
                others: match shorthand {
                    0 if to_self => None,
                    0 => Some(dest),
                    1 => None,
                    _ => Some(u32::MAX),
                },
                to_self,
            },
            _ => ApicEffect::Special { dest, mode, vector },
        }
    }

    /// An xAPIC-mode register as the MMIO page holds it (`index` = offset / 16).
    fn xapic_register(&self, index: u32) -> u32 {
        match index {
            0x02 => self.id << 24,
            0x0d => self.ldr,
            0x0e => self.dfr,
            0x30 => self.icr as u32,
            0x31 => self.icr_hi,
            // x2APIC only.
            0x3f => 0,
            // Everything else reads as in x2APIC mode; write-only and reserved registers
            // read 0.
            i => self.read(X2APIC_MSR_BASE + i).map_or(0, |v| v as u32),
        }
    }

    /// Reads `size` bytes at `offset` in the xAPIC page. Each register is the first
    /// four bytes of its 16-byte slot; the rest of the slot reads 0.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        let offset = offset & 0xfff;
        let slot = u128::from(self.xapic_register((offset >> 4) as u32));
        let shift = (offset & 0xf) * 8;
        let value = (slot >> shift) as u64;
        match size {
            8 => value,
            n => value & ((1u64 << (u32::from(n) * 8)) - 1),
        }
    }

    /// Writes `size` bytes at `offset` in the xAPIC page. Only aligned 32-bit writes of a
    /// register reach it (narrower or misaligned writes are dropped, as Xen drops them);
    /// writes to read-only or reserved registers are ignored, as in xAPIC mode on
    /// hardware (no #GP for MMIO).
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) -> ApicEffect {
        let offset = offset & 0xfff;
        if offset & 0xf != 0 || size < 4 {
            return ApicEffect::None;
        }
        let v = value as u32;
        match (offset >> 4) as u32 {
            0x02 | 0x3f => {}
            0x0b => {
                if let Some(vec) = highest(&self.isr) {
                    set(&mut self.isr, vec, false);
                    self.eoi = Some(vec);
                }
            }
            0x0d => self.ldr = v & 0xff00_0000,
            0x0e => self.dfr = v | 0x0fff_ffff,
            0x31 => self.icr_hi = v & 0xff00_0000,
            0x30 => {
                let dest = self.icr_hi >> 24;
                let logical = v & (1 << 11) != 0;
                let shorthand = (v >> 18) & 3;
                let x2 = if shorthand == 0 && !logical && dest == 0xff {
                    // Physical broadcast: all including self.
                    u64::from(v) | (2 << 18)
                } else {
                    // A physical id, or a logical destination (8-bit MDA) matched against
                    // each APIC's flat or cluster LDR by `write_icr`.
                    u64::from(v) | (u64::from(dest) << 32)
                };
                let effect = self.write_icr(x2);
                self.icr = u64::from(v) & !(1 << 12);
                return effect;
            }
            i => {
                let _ = self.write(X2APIC_MSR_BASE + i, u64::from(v));
            }
        }
        ApicEffect::None
    }

    /// The vector the last EOI retired, once.
    pub fn take_eoi(&mut self) -> Option<u8> {
        self.eoi.take()
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
        if self.svr & (1 << 8) == 0 || self.mode() == Mode::Disabled {
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
    fn logical_ids_match_as_the_sdm_says() {
        use LogicalId::*;
        assert!(Flat(0b0100).matches(0b0110) && !Flat(0b0100).matches(0b0011));
        assert!(Flat(0).matches(0xff), "flat broadcast");
        assert!(!Flat(0).matches(0x01));
        assert!(Cluster(0x21).matches(0x23), "cluster 2, bit 0");
        assert!(!Cluster(0x21).matches(0x31), "another cluster");
        assert!(!Cluster(0x21).matches(0x22), "another bit");
        assert!(Cluster(0x21).matches(0xff));
        let x2 = X2((1 << 16) | (1 << 3)); // x2APIC id 19
        assert!(x2.matches((1 << 16) | 0b1000) && !x2.matches((1 << 16) | 0b0100));
        assert!(!x2.matches(1 << 3), "cluster 0");
        assert!(x2.matches(u32::MAX));
        assert!(!Off.matches(u32::MAX), "a disabled APIC takes nothing");
        for id in [Off, Flat(0x81), Cluster(0x42), x2] {
            assert_eq!(LogicalId::from_bits(id.to_bits()), id);
        }
    }

    #[test]
    fn logical_id_follows_ldr_dfr_and_mode() {
        let mut a = Vlapic::new(19);
        assert_eq!(
            a.logical_id(),
            LogicalId::Flat(0),
            "LDR 0, flat DFR at reset"
        );
        a.mmio_write(0xd0, 4, 0x0800_0000);
        assert_eq!(a.logical_id(), LogicalId::Flat(0x08));
        a.mmio_write(0xe0, 4, 0x0fff_ffff);
        assert_eq!(a.logical_id(), LogicalId::Cluster(0x08));
        a.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_EXTD, 40)
            .unwrap();
        assert_eq!(a.logical_id(), LogicalId::X2((1 << 16) | (1 << 3)));
        assert_eq!(a.read(0x80d), Some((1 << 16) | (1 << 3)));
        a.set_apic_base(APIC_DEFAULT_BASE, 40).unwrap();
        assert_eq!(a.logical_id(), LogicalId::Off);
    }

    #[test]
    fn logical_ipis_in_both_modes() {
        // xAPIC, flat: the sender holds bit 1; a send to bits 1|2 reaches it and others.
        let mut a = Vlapic::new(1);
        a.mmio_write(0xf0, 4, 0x1ff);
        a.mmio_write(0xd0, 4, 0x0200_0000);
        a.mmio_write(0x310, 4, 0x06 << 24);
        assert_eq!(
            a.mmio_write(0x300, 4, (1 << 11) | 0x61),
            ApicEffect::LogicalIpi {
                mda: 0x06,
                vector: 0x61
            }
        );
        assert!(a.is_pending(0x61), "the sender matched its own MDA");
        a.mmio_write(0x310, 4, 0x04 << 24);
        assert_eq!(
            a.mmio_write(0x300, 4, (1 << 11) | 0x62),
            ApicEffect::LogicalIpi {
                mda: 0x04,
                vector: 0x62
            }
        );
        assert!(!a.is_pending(0x62), "not for the sender");
        assert_eq!(
            a.mmio_write(0x300, 4, (1 << 11) | (4 << 8)),
            ApicEffect::LogicalNmi {
                mda: 0x04,
                to_self: false
            }
        );
        assert_eq!(
            a.mmio_write(0x300, 4, (1 << 11) | (6 << 8) | 0x10),
            ApicEffect::None,
            "a logical SIPI is not supported"
        );
        // x2APIC: the destination is 32 bits (cluster, bits), never a physical id.
        let mut b = enabled(1);
        b.set_apic_base(APIC_DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_EXTD, 40)
            .unwrap();
        assert_eq!(
            b.write(0x830, (0b0001u64 << 32) | (1 << 11) | 0x63)
                .unwrap(),
            ApicEffect::LogicalIpi {
                mda: 0b0001,
                vector: 0x63
            },
            "logical 1 is APIC id 0, not id 1"
        );
        assert!(!b.is_pending(0x63));
        b.write(0x830, (0b0010u64 << 32) | (1 << 11) | 0x64)
            .unwrap();
        assert!(b.is_pending(0x64), "logical 2 in cluster 0 is id 1 itself");
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
            ApicEffect::Nmi {
                others: Some(1),
                to_self: false
            },
            "NMI"
        );
        assert_eq!(
            a.write(0x830, (2u64 << 32) | (4 << 8)).unwrap(),
            ApicEffect::Nmi {
                others: None,
                to_self: true
            },
            "NMI to its own id"
        );
        assert_eq!(
            a.write(0x830, (2 << 18) | (4 << 8)).unwrap(),
            ApicEffect::Nmi {
                others: Some(u32::MAX),
                to_self: true
            },
            "NMI to all including self"
        );
        assert_eq!(
            a.write(0x830, (3 << 18) | (4 << 8)).unwrap(),
            ApicEffect::Nmi {
                others: Some(u32::MAX),
                to_self: false
            },
            "NMI to all but self (Linux's stop and backtrace)"
        );
        assert!(!a.is_pending(0), "an NMI raises no vector");
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

    #[test]
    fn starts_in_xapic_mode_at_the_default_base() {
        let bsp = Vlapic::new(0);
        assert_eq!(bsp.mode(), Mode::XApic);
        assert_eq!(bsp.apic_base(), 0xfee0_0900);
        assert_eq!(bsp.mmio_page(), Some(0xfee0_0000));
        assert_eq!(
            Vlapic::new(1).apic_base(),
            0xfee0_0800,
            "BSP flag on vCPU 0 only"
        );
    }

    #[test]
    fn apic_base_transitions_follow_the_sdm() {
        let mut a = Vlapic::new(0);
        let x2 = 0xfee0_0000 | APIC_BASE_ENABLE | APIC_BASE_EXTD;
        let xapic = 0xfee0_0000 | APIC_BASE_ENABLE;
        assert_eq!(a.set_apic_base(x2, 36), Ok(()));
        assert_eq!(a.mode(), Mode::X2Apic);
        assert_eq!(a.mmio_page(), None);
        assert_eq!(a.apic_base() & APIC_BASE_BSP, APIC_BASE_BSP, "BSP kept");
        assert_eq!(a.set_apic_base(xapic, 36), Err(()), "x2APIC -> xAPIC");
        assert_eq!(
            a.set_apic_base(0xfee0_0000, 36),
            Ok(()),
            "x2APIC -> disabled"
        );
        assert_eq!(a.mode(), Mode::Disabled);
        assert_eq!(a.set_apic_base(x2, 36), Err(()), "disabled -> x2APIC");
        assert_eq!(
            a.set_apic_base(0xfee0_0000 | APIC_BASE_EXTD, 36),
            Err(()),
            "EXTD without EN"
        );
        assert_eq!(a.set_apic_base(xapic, 36), Ok(()), "disabled -> xAPIC");
        assert_eq!(a.set_apic_base(xapic | 1, 36), Err(()), "reserved bit 0");
        assert_eq!(
            a.set_apic_base(xapic | 1 << 9, 36),
            Err(()),
            "reserved bit 9"
        );
        assert_eq!(
            a.set_apic_base(xapic | 1 << 36, 36),
            Err(()),
            "address beyond the physical width"
        );
        assert_eq!(a.set_apic_base(0xfed0_0000 | APIC_BASE_ENABLE, 36), Ok(()));
        assert_eq!(a.mmio_page(), Some(0xfed0_0000), "relocated");
        assert_eq!(a.set_apic_base(xapic & !APIC_BASE_BSP, 36), Ok(()));
        assert_eq!(
            a.apic_base() & APIC_BASE_BSP,
            APIC_BASE_BSP,
            "BSP read-only"
        );
    }

    #[test]
    fn disabling_resets_and_stops_delivery() {
        let mut a = enabled(0);
        a.raise(0x80);
        assert_eq!(a.next_interrupt(), Some(0x80));
        a.set_apic_base(0xfee0_0000, 36).unwrap();
        assert_eq!(a.next_interrupt(), None);
        a.set_apic_base(0xfee0_0000 | APIC_BASE_ENABLE, 36).unwrap();
        assert_eq!(a.read(0x80f), Some(0xff), "SVR back to its reset value");
        assert!(!a.is_pending(0x80), "IRR cleared");
    }

    #[test]
    fn after_init_keeps_the_mode() {
        let mut a = enabled(1);
        a.set_apic_base(0xfee0_0000 | APIC_BASE_ENABLE | APIC_BASE_EXTD, 36)
            .unwrap();
        let b = a.after_init();
        assert_eq!(b.mode(), Mode::X2Apic);
        assert_eq!(b.read(0x80f), Some(0xff));
    }

    #[test]
    fn xapic_mmio_registers() {
        let mut a = Vlapic::new(3);
        assert_eq!(a.mmio_read(0x20, 4), 3 << 24, "ID in bits 24-31");
        assert_eq!(a.mmio_read(0x23, 1), 3, "byte read of the ID's top byte");
        assert_eq!(a.mmio_read(0x30, 4), 0x0005_0014, "version");
        assert_eq!(a.mmio_read(0x24, 4), 0, "the rest of a slot reads 0");
        assert_eq!(a.mmio_read(0xe0, 4), 0xffff_ffff, "DFR resets to flat");
        a.mmio_write(0xf0, 4, 0x1ff);
        assert_eq!(a.mmio_read(0xf0, 4), 0x1ff, "SVR");
        a.mmio_write(0x80, 4, 0x20);
        assert_eq!(a.mmio_read(0x80, 4), 0x20, "TPR");
        a.mmio_write(0x80, 2, 0x30);
        assert_eq!(a.mmio_read(0x80, 4), 0x20, "a 16-bit write is dropped");
        a.mmio_write(0xd0, 4, 0x0100_0000);
        assert_eq!(a.mmio_read(0xd0, 4), 0x0100_0000, "LDR is writable");
        a.mmio_write(0x20, 4, 0x0700_0000);
        assert_eq!(a.mmio_read(0x20, 4), 3 << 24, "ID writes ignored");
        a.mmio_write(0x3f0, 4, 0x40);
        assert!(!a.is_pending(0x40), "no SELF_IPI register in xAPIC mode");
    }

    #[test]
    fn xapic_icr_sends_through_the_high_half() {
        let mut a = Vlapic::new(2);
        a.mmio_write(0xf0, 4, 0x1ff);
        a.mmio_write(0x310, 4, 2 << 24);
        assert_eq!(a.mmio_write(0x300, 4, 0x51), ApicEffect::None, "to itself");
        assert!(a.is_pending(0x51));
        a.mmio_write(0x310, 4, 5 << 24);
        assert_eq!(
            a.mmio_write(0x300, 4, 0x52),
            ApicEffect::Ipi {
                dest: 5,
                vector: 0x52
            }
        );
        assert_eq!(a.mmio_read(0x310, 4), 5 << 24);
        assert_eq!(a.mmio_read(0x300, 4), 0x52);
        a.mmio_write(0x310, 4, 0xff << 24);
        assert_eq!(
            a.mmio_write(0x300, 4, 0x53),
            ApicEffect::Ipi {
                dest: u32::MAX,
                vector: 0x53
            },
            "physical broadcast"
        );
        assert!(a.is_pending(0x53), "a broadcast includes the sender");
        a.mmio_write(0x310, 4, 1 << 24);
        assert_eq!(
            a.mmio_write(0x300, 4, 0x4600),
            ApicEffect::Special {
                dest: 1,
                mode: 6,
                vector: 0
            },
            "SIPI"
        );
        a.ack(0x53);
        assert_ne!(a.read(0x812), Some(0), "0x53 in service");
        a.mmio_write(0xb0, 4, 0x1234);
        assert_eq!(a.read(0x812), Some(0), "an xAPIC EOI takes any value");
    }

    #[test]
    fn one_shot_timer_fires_once_at_its_deadline() {
        let mut a = enabled(0);
        a.advance(1_000);
        a.write(0x83e, 0xb).unwrap(); // divide by 1
        a.write(0x832, 0x40).unwrap(); // one-shot, vector 0x40
        a.write(0x838, 5_000).unwrap();
        assert_eq!(a.timer_expiry(), Some(6_000));
        a.advance(3_000);
        assert_eq!(a.read(0x839), Some(3_000), "current count counts down");
        assert_eq!(a.next_interrupt(), None);
        a.advance(6_000);
        assert_eq!(a.next_interrupt(), Some(0x40));
        assert_eq!(a.timer_expiry(), None, "one-shot: stopped");
        assert_eq!(a.read(0x839), Some(0));
    }

    #[test]
    fn divider_scales_the_count() {
        let mut a = enabled(0);
        a.write(0x83e, 0x3).unwrap(); // divide by 16
        a.write(0x838, 1_000).unwrap();
        assert_eq!(a.timer_expiry(), Some(16_000));
        a.write(0x838, 0).unwrap();
        assert_eq!(a.timer_expiry(), None, "an initial count of 0 stops it");
    }

    #[test]
    fn periodic_timer_rearms_past_missed_periods() {
        let mut a = enabled(0);
        a.write(0x83e, 0xb).unwrap();
        a.write(0x832, u64::from(LVT_TIMER_PERIODIC | 0x41))
            .unwrap();
        a.write(0x838, 1_000_000).unwrap(); // 1 ms
        a.advance(3_500_000);
        assert_eq!(a.next_interrupt(), Some(0x41), "missed periods coalesce");
        assert_eq!(a.timer_expiry(), Some(4_000_000));
        // A hostile period of 1 ns re-arms no sooner than MIN_PERIOD_NS.
        a.write(0x838, 1).unwrap();
        a.advance(4_000_001);
        assert_eq!(a.timer_expiry(), Some(4_000_001 + MIN_PERIOD_NS));
    }

    #[test]
    fn masked_timer_expires_silently_and_disabled_svr_masks() {
        let mut a = enabled(0);
        a.write(0x832, u64::from(LVT_MASKED | 0x42)).unwrap();
        a.write(0x838, 10).unwrap();
        a.advance(1_000);
        assert_eq!(a.next_interrupt(), None);
        a.write(0x832, 0x42).unwrap();
        a.write(0x80f, 0xff).unwrap(); // software-disable
        assert_eq!(a.read(0x832), Some(u64::from(LVT_MASKED | 0x42)));
        a.write(0x832, 0x42).unwrap();
        assert_eq!(
            a.read(0x832),
            Some(u64::from(LVT_MASKED | 0x42)),
            "LVTs stay masked while the APIC is software-disabled"
        );
    }
}
