//! dom0's view of the host's PCI configuration space, mediated (a reduced form of Xen's
//! vPCI, `xen/drivers/vpci/`).
//!
//! Only the control domain reaches here (`domain/run.rs` dispatches ports 0xCF8..0xCFF to
//! [`port_io`] for it; every other domain keeps reads of all ones). Its address latch
//! (0xCF8, 4-byte accesses) is emulated; accesses at 0xCFC..0xCFF reach the register the
//! latch selects plus the port's offset. Reads pass through. Writes pass through except:
//!
//! * **BARs and the expansion ROM BAR** are sized by the hypervisor when dom0 first
//!   touches the function (decoding off meanwhile). When memory decoding is on (and, for
//!   the ROM, its enable bit), each memory BAR's pages are identity-mapped (gfn == mfn)
//!   into dom0's p2m as uncached MMIO, but only if they lie wholly outside the host's RAM
//!   (every kind; the hypervisor's own memory is RAM), above 1 MiB, outside the
//!   interrupt-controller and timer window 0xFEC00000-0xFEFFFFFF, and nothing else is
//!   mapped there in dom0's p2m; otherwise the mapping is refused with a warning. Turning
//!   decoding off or moving a BAR unmaps it (and every vCPU flushes before it runs
//!   again). While a BAR decodes, writes that would move it are dropped, as Xen drops
//!   them; sizing with all ones and restoring works with decoding off, as Linux does it.
//! * **Bus mastering** (command bit 2) is kept off: dom0's addresses are not host
//!   addresses and there is no IOMMU, so a device's DMA would land in arbitrary host
//!   memory.
//! * **MSI and MSI-X capability structures** are read-only (writes dropped): there is no
//!   interrupt delivery from devices yet.
//! * Functions with a header type other than 0 or 1 get no writes at 0x10..0x3F.
//!
//! I/O-space BARs pass through unmediated: dom0 reaches no host I/O port anyway.

use crate::mm::frame::{PhysRange, FRAME_SIZE};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use arrayvec::ArrayVec;
use core::fmt;
use log::{debug, warn};

/// Configuration mechanism #1's address register.
pub const ADDRESS_PORT: u16 = 0xcf8;
/// The first port of its data window (0xCFC..0xCFF).
pub const DATA_PORT: u16 = 0xcfc;

/// The ports dispatched here: the address register and the data window.
pub fn owns(port: u16) -> bool {
    (ADDRESS_PORT..DATA_PORT + 4).contains(&port)
}

/// A function's address on the host's PCI buses: bus in bits 15:8, device in 7:3,
/// function in 2:0 (the layout of bits 23:8 of the address register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf(pub u16);

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.0 >> 8,
            (self.0 >> 3) & 0x1f,
            self.0 & 7
        )
    }
}

/// The value of the address register selecting `reg` (rounded down to its dword) of `bdf`.
pub const fn address(bdf: Bdf, reg: u8) -> u32 {
    0x8000_0000 | ((bdf.0 as u32) << 8) | (reg as u32 & 0xfc)
}

/// Whether an access of `size` bytes at `reg` is one mechanism #1 can make: 1, 2 or 4
/// bytes, inside one dword.
pub const fn valid_access(reg: u8, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && (reg & 3) + size <= 4
}

/// All ones in the low `size` bytes: what a read of nothing returns.
pub const fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// Configuration space as the mediation sees it (the host's ports, `arch::x86::pci`, or
/// a model in tests).
pub trait ConfigSpace {
    fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32;
    fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32);
}

/// dom0's p2m as the mediation uses it: identity-mapping device pages `[start, end)`.
pub trait Mmio {
    /// Maps the pages; Err says why not (nothing stays mapped then).
    fn map(&mut self, start: u64, end: u64) -> Result<(), &'static str>;
    /// Unmaps the pages except those `keep` names (another BAR's).
    fn unmap(&mut self, start: u64, end: u64, keep: &dyn Fn(u64) -> bool);
}

/// An MSI message as a device sends it: the address's low dword and the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub address: u32,
    pub data: u16,
}

impl Message {
    /// Destination id (address bits 19:12).
    pub const fn dest(self) -> u8 {
        (self.address >> 12) as u8
    }

    /// Logical destination mode (address bit 2).
    pub const fn logical(self) -> bool {
        self.address & (1 << 2) != 0
    }

    /// The vector (data bits 7:0).
    pub const fn vector(self) -> u8 {
        self.data as u8
    }

    /// Delivery mode (data bits 10:8): 0 fixed, 1 lowest priority, others not delivered.
    pub const fn delivery(self) -> u8 {
        ((self.data >> 8) & 7) as u8
    }
}

/// The hypervisor's MSI vectors as the mediation uses them (`arch::x86::msi`, or a model
/// in tests): a device's MSI is bound to a slot, whose host message it sends; the slot's
/// target is the message dom0 programmed.
pub trait MsiSlots {
    fn alloc(&mut self) -> Option<usize>;
    fn free(&mut self, slot: usize);
    fn set_target(&mut self, slot: usize, dom0: Message);
    fn host_message(&self, slot: usize) -> Message;
}

const VENDOR: u8 = 0x00;
const COMMAND: u8 = 0x04;
const CMD_IO: u32 = 1 << 0;
const CMD_MEMORY: u32 = 1 << 1;
const CMD_MASTER: u32 = 1 << 2;
const STATUS: u8 = 0x06;
const STATUS_CAP_LIST: u32 = 1 << 4;
const HEADER_TYPE: u8 = 0x0e;
const BAR0: u8 = 0x10;
const CAP_PTR: u8 = 0x34;
const ROM_TYPE0: u8 = 0x30;
const ROM_TYPE1: u8 = 0x38;
const ROM_ENABLE: u32 = 1;
const ROM_ADDRESS: u32 = 0xffff_f800;
const CAP_MSI: u32 = 0x05;
const CAP_MSIX: u32 = 0x11;

/// Nothing is identity-mapped below this (BIOS data, legacy VGA and ROM areas).
const LOW_END: u64 = 0x10_0000;
/// The platform's IOAPIC, HPET and local APIC window: the hypervisor's, never dom0's.
const PLATFORM: (u64, u64) = (0xfec0_0000, 0xff00_0000);
/// Larger BARs are refused for now (mapped page by page).
const MAX_BAR: u64 = 1 << 30;
/// The p2m's reach.
const MAX_ADDR: u64 = 1 << 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Not implemented by the device (sizes to zero).
    Unused,
    /// I/O space: not mediated.
    Io,
    Mem32,
    /// The low dword of a 64-bit memory BAR (the next register is its [`Kind::Mem64High`]).
    Mem64,
    Mem64High,
    Rom,
}

/// Where a BAR decodes now, and the pages mapped for it (None: refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placement {
    addr: u64,
    mapped: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    kind: Kind,
    reg: u8,
    size: u64,
    placed: Option<Placement>,
}

/// A function's MSI capability as dom0 sees it. The device itself sends its slot's host
/// message; dom0 reads back what it wrote.
#[derive(Clone, Copy, Debug)]
struct Msi {
    /// Offset of the capability.
    pos: u8,
    /// 64-bit message address.
    wide: bool,
    /// Per-vector masking (mask and pending registers after the data).
    masking: bool,
    /// dom0's enable bit.
    enabled: bool,
    /// dom0's message address (low and high dwords) and data.
    addr_lo: u32,
    addr_hi: u32,
    data: u16,
    slot: Option<usize>,
}

impl Msi {
    const CONTROL: u8 = 2;
    const ADDR: u8 = 4;
    const ENABLE: u32 = 1;
    /// Multiple Message Capable (bits 3:1) and Enable (6:4): one vector only.
    const MULTI: u32 = 0x7e;

    fn data_at(&self) -> u8 {
        if self.wide {
            0x0c
        } else {
            0x08
        }
    }

    /// The capability's length in bytes.
    fn len(&self) -> u8 {
        self.data_at() + if self.masking { 12 } else { 4 }
    }

    fn message(&self) -> Message {
        Message {
            address: self.addr_lo,
            data: self.data,
        }
    }
}

/// What the mediation knows of one function, learnt at its first access.
#[derive(Debug)]
struct Device {
    /// BARs 0..5 (header 0) or 0..1 (header 1), then the ROM BAR.
    bars: ArrayVec<Bar, 7>,
    /// Registers `[start, end)` dom0 may not write (MSI-X).
    denied: ArrayVec<(u16, u16), 4>,
    /// The MSI capability, mediated.
    msi: Option<Msi>,
    /// Capability-list pointer bytes dom0 reads with another value: (register, value).
    /// The list skips MSI-X, which is not mediated (a driver finding it would set it up,
    /// and the writes would do nothing), so drivers fall back to MSI or INTx.
    pointers: ArrayVec<(u8, u8), 4>,
    /// Header type other than 0 and 1: no writes to 0x10..0x3F.
    other_header: bool,
}

/// dom0's configuration-space state: the address latch and the functions seen.
pub struct State {
    latch: u32,
    devices: BTreeMap<Bdf, Device>,
    /// dom0's RAM is at the host's addresses (`GuestMemory::new_identity`), so its
    /// devices may master the bus: their DMA lands where dom0 means it to.
    dma: bool,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    pub const fn new() -> Self {
        State {
            latch: 0,
            devices: BTreeMap::new(),
            dma: false,
        }
    }

    /// Whether dom0's devices may master the bus (dom0's RAM is identity-mapped).
    pub fn allow_dma(&mut self, dma: bool) {
        self.dma = dma;
    }

    /// One port access by dom0 at `port` (0xCF8..0xCFF) of `size` bytes; a read returns
    /// the value (low `size` bytes), a write returns None.
    pub fn access(
        &mut self,
        cfg: &mut impl ConfigSpace,
        mmio: &mut (impl Mmio + MsiSlots),
        ram: &[PhysRange],
        port: u16,
        size: u8,
        write: Option<u32>,
    ) -> Option<u32> {
        if port == ADDRESS_PORT && size == 4 {
            return match write {
                Some(v) => {
                    self.latch = v;
                    None
                }
                None => Some(self.latch),
            };
        }
        let offset = port.wrapping_sub(DATA_PORT);
        let selected = self.latch & 0x8000_0000 != 0;
        if offset > 3 || !selected || !valid_access(offset as u8, size) {
            // 0xCF9..0xCFB or a latch without its enable bit: nothing there.
            return write.is_none().then_some(all_ones(size));
        }
        let bdf = Bdf((self.latch >> 8) as u16);
        let reg = (self.latch & 0xfc) as u8 + offset as u8;
        let present = self.device(cfg, mmio, ram, bdf);
        match write {
            None => Some(self.read(cfg, bdf, reg, size)),
            Some(v) => {
                if present {
                    self.write(cfg, mmio, ram, bdf, reg, size, v);
                }
                None
            }
        }
    }

    /// Learns the function at `bdf` on its first access (sizing its BARs, finding its MSI
    /// and MSI-X capabilities) and maps what it decodes already; false if none is there.
    fn device(
        &mut self,
        cfg: &mut impl ConfigSpace,
        mmio: &mut impl Mmio,
        ram: &[PhysRange],
        bdf: Bdf,
    ) -> bool {
        if self.devices.contains_key(&bdf) {
            return true;
        }
        if cfg.read(bdf, VENDOR, 2) == 0xffff {
            return false;
        }
        let dev = probe(cfg, bdf);
        self.devices.insert(bdf, dev);
        self.refresh(cfg, mmio, ram, bdf);
        true
    }

    /// A read: the device's registers, but the MSI capability's control, address and
    /// data as dom0 wrote them.
    fn read(&self, cfg: &mut impl ConfigSpace, bdf: Bdf, reg: u8, size: u8) -> u32 {
        let mut value = cfg.read(bdf, reg, size);
        let Some(dev) = self.devices.get(&bdf) else {
            return value;
        };
        for &(at, v) in &dev.pointers {
            if let Some(i) = at.checked_sub(reg).filter(|&i| i < size) {
                let shift = 8 * u32::from(i);
                value = (value & !(0xff << shift)) | (u32::from(v) << shift);
            }
        }
        let Some(msi) = dev.msi else {
            return value;
        };
        let mut out = value;
        for i in 0..size {
            let Some(o) = (reg + i).checked_sub(msi.pos).filter(|&o| o < msi.len()) else {
                continue;
            };
            let d = msi.data_at();
            let v = match o {
                2 | 3 => {
                    let control = cfg.read(bdf, msi.pos + Msi::CONTROL, 2);
                    let control = (control & !(Msi::MULTI | Msi::ENABLE)) | u32::from(msi.enabled);
                    (control >> (8 * (o - 2))) as u8
                }
                4..=7 => (msi.addr_lo >> (8 * (o - 4))) as u8,
                8..=11 if msi.wide => (msi.addr_hi >> (8 * (o - 8))) as u8,
                _ if o == d || o == d + 1 => (msi.data >> (8 * (o - d))) as u8,
                _ if o == d + 2 || o == d + 3 => 0,
                _ => continue,
            };
            let shift = 8 * u32::from(i);
            out = (out & !(0xff << shift)) | (u32::from(v) << shift);
        }
        out
    }

    /// A write inside `bdf`'s MSI capability at `pos` (some bytes of it may lie
    /// outside): dom0's control, address and data are kept; the mask register passes
    /// through; the device is programmed to send its slot's host message while dom0 has
    /// MSI enabled.
    #[allow(clippy::too_many_arguments)]
    fn write_msi(
        &mut self,
        cfg: &mut impl ConfigSpace,
        slots: &mut impl MsiSlots,
        bdf: Bdf,
        reg: u8,
        size: u8,
        value: u32,
    ) {
        let Some(mut msi) = self.devices.get(&bdf).and_then(|d| d.msi) else {
            return;
        };
        let d = msi.data_at();
        for i in 0..size {
            let byte = (value >> (8 * u32::from(i))) as u8;
            // The capability starts on a dword and its length is a multiple of 4, so an
            // access (inside one dword) that reaches it lies wholly inside it.
            let Some(o) = (reg + i).checked_sub(msi.pos).filter(|&o| o < msi.len()) else {
                continue;
            };
            let set = |w: u32, at: u8| (w & !(0xff << (8 * at))) | (u32::from(byte) << (8 * at));
            match o {
                2 => msi.enabled = byte & 1 != 0,
                4..=7 => msi.addr_lo = set(msi.addr_lo, o - 4),
                8..=11 if msi.wide => msi.addr_hi = set(msi.addr_hi, o - 8),
                _ if o == d || o == d + 1 => {
                    msi.data = set(u32::from(msi.data), o - d) as u16;
                }
                // The mask bits: the device's own.
                _ if msi.masking && (d + 4..d + 8).contains(&o) => {
                    cfg.write(bdf, reg + i, 1, u32::from(byte));
                }
                // Id, next pointer, the rest of control, pending bits: read-only.
                _ => {}
            }
        }
        let control_reg = msi.pos + Msi::CONTROL;
        let control = cfg.read(bdf, control_reg, 2) & !(Msi::MULTI | Msi::ENABLE);
        if msi.enabled && msi.slot.is_none() {
            msi.slot = slots.alloc();
            if msi.slot.is_none() {
                warn!("vpci: {bdf}: no MSI vector left; MSI stays off");
            }
        }
        match msi.slot {
            Some(slot) if msi.enabled => {
                slots.set_target(slot, msi.message());
                let host = slots.host_message(slot);
                cfg.write(bdf, msi.pos + Msi::ADDR, 4, host.address);
                if msi.wide {
                    cfg.write(bdf, msi.pos + 8, 4, 0);
                }
                cfg.write(bdf, msi.pos + d, 2, u32::from(host.data));
                cfg.write(bdf, control_reg, 2, control | Msi::ENABLE);
                debug!(
                    "vpci: {bdf}: MSI on: host vector {:#x} -> dom0 {:x?}",
                    host.data,
                    msi.message()
                );
            }
            _ => {
                cfg.write(bdf, control_reg, 2, control);
                if let Some(slot) = msi.slot.take() {
                    slots.free(slot);
                }
            }
        }
        if let Some(dev) = self.devices.get_mut(&bdf) {
            dev.msi = Some(msi);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        cfg: &mut impl ConfigSpace,
        mmio: &mut (impl Mmio + MsiSlots),
        ram: &[PhysRange],
        bdf: Bdf,
        reg: u8,
        size: u8,
        value: u32,
    ) {
        let Some(dev) = self.devices.get(&bdf) else {
            return;
        };
        let (start, end) = (u16::from(reg), u16::from(reg) + u16::from(size));
        if dev.denied.iter().any(|&(s, e)| start < e && s < end) {
            debug!("vpci: {bdf}: write to MSI-X register {reg:#x} dropped");
            return;
        }
        if let Some(msi) = dev.msi {
            let (s, e) = (
                u16::from(msi.pos),
                u16::from(msi.pos) + u16::from(msi.len()),
            );
            if start < e && s < end {
                self.write_msi(cfg, mmio, bdf, reg, size, value);
                return;
            }
        }
        if start < u16::from(COMMAND) + 2 && u16::from(COMMAND) < end {
            // reg is 4 or 5 (a dword access at 4 covers the status register too, which
            // passes through: its bits are write-1-to-clear).
            let value = if reg == COMMAND && !self.dma {
                value & !CMD_MASTER
            } else {
                value
            };
            cfg.write(bdf, reg, size, value);
            self.refresh(cfg, mmio, ram, bdf);
            return;
        }
        let dword = reg & !3;
        if let Some(bar) = dev.bars.iter().find(|b| b.reg == dword).copied() {
            match bar.kind {
                Kind::Unused | Kind::Io => cfg.write(bdf, reg, size, value),
                Kind::Mem32 | Kind::Mem64 | Kind::Mem64High | Kind::Rom => {
                    let current = cfg.read(bdf, dword, 4);
                    let merged = merge(current, reg & 3, size, value);
                    let memory = cfg.read(bdf, COMMAND, 2) & CMD_MEMORY != 0;
                    let (decoding, address_bits) = match bar.kind {
                        Kind::Rom => (memory && current & ROM_ENABLE != 0, ROM_ADDRESS),
                        Kind::Mem64High => (memory, u32::MAX),
                        _ => (memory, !0xf),
                    };
                    if decoding && (merged ^ current) & address_bits != 0 {
                        warn!(
                            "vpci: {bdf}: write {merged:#x} to BAR register {dword:#x} while \
                             memory decoding is on ignored"
                        );
                        return;
                    }
                    cfg.write(bdf, dword, 4, merged);
                    self.refresh(cfg, mmio, ram, bdf);
                }
            }
            return;
        }
        if dev.other_header && (0x10..0x40).contains(&reg) {
            return;
        }
        cfg.write(bdf, reg, size, value);
    }

    /// Brings the p2m in line with where `bdf`'s memory BARs decode now: unmaps what moved
    /// or stopped decoding, maps (after the checks) what newly decodes.
    fn refresh(
        &mut self,
        cfg: &mut impl ConfigSpace,
        mmio: &mut impl Mmio,
        ram: &[PhysRange],
        bdf: Bdf,
    ) {
        let Some(mut dev) = self.devices.remove(&bdf) else {
            return;
        };
        let memory = cfg.read(bdf, COMMAND, 2) & CMD_MEMORY != 0;
        for i in 0..dev.bars.len() {
            let bar = dev.bars[i];
            let want = match bar.kind {
                Kind::Mem32 if memory => Some(u64::from(cfg.read(bdf, bar.reg, 4) & !0xf)),
                Kind::Mem64 if memory => {
                    let lo = cfg.read(bdf, bar.reg, 4) & !0xf;
                    let hi = cfg.read(bdf, bar.reg.wrapping_add(4), 4);
                    Some(u64::from(lo) | (u64::from(hi) << 32))
                }
                Kind::Rom if memory => {
                    let v = cfg.read(bdf, bar.reg, 4);
                    (v & ROM_ENABLE != 0).then_some(u64::from(v & ROM_ADDRESS))
                }
                _ => None,
            };
            if bar.placed.map(|p| p.addr) == want {
                continue;
            }
            if let Some(Placement {
                mapped: Some((s, e)),
                ..
            }) = bar.placed
            {
                let others: Vec<(u64, u64)> = self
                    .devices
                    .values()
                    .flat_map(|d| d.bars.iter())
                    .chain(
                        dev.bars
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .map(|(_, b)| b),
                    )
                    .filter_map(|b| b.placed.and_then(|p| p.mapped))
                    .collect();
                mmio.unmap(s, e, &|page| {
                    others.iter().any(|&(a, b)| a <= page && page < b)
                });
                debug!(
                    "vpci: {bdf}: BAR register {:#x} unmapped from [{s:#x}, {e:#x})",
                    bar.reg
                );
            }
            dev.bars[i].placed = want.map(|addr| {
                let mapped = match pages(addr, bar.size, ram) {
                    Err(why) => {
                        warn!(
                            "vpci: {bdf}: BAR register {:#x} at {addr:#x} (size {:#x}) not \
                             mapped into dom0: {why}",
                            bar.reg, bar.size
                        );
                        None
                    }
                    Ok((s, e)) => match mmio.map(s, e) {
                        Ok(()) => {
                            debug!(
                                "vpci: {bdf}: BAR register {:#x} identity-mapped at \
                                 [{s:#x}, {e:#x})",
                                bar.reg
                            );
                            Some((s, e))
                        }
                        Err(why) => {
                            warn!(
                                "vpci: {bdf}: BAR register {:#x} at {addr:#x} not mapped \
                                 into dom0: {why}",
                                bar.reg
                            );
                            None
                        }
                    },
                };
                Placement { addr, mapped }
            });
        }
        self.devices.insert(bdf, dev);
    }
}

/// `current` with the low `size` bytes of `value` written at byte `offset`.
fn merge(current: u32, offset: u8, size: u8, value: u32) -> u32 {
    let shift = u32::from(offset & 3) * 8;
    let mask = all_ones(size).checked_shl(shift).unwrap_or(0);
    (current & !mask) | (value.checked_shl(shift).unwrap_or(0) & mask)
}

/// The pages a memory BAR at `addr` of `size` bytes covers, if it may be identity-mapped
/// into dom0; else why not.
fn pages(addr: u64, size: u64, ram: &[PhysRange]) -> Result<(u64, u64), &'static str> {
    if size == 0 {
        return Err("empty");
    }
    if size > MAX_BAR {
        return Err("larger than 1 GiB (not supported yet)");
    }
    let end = addr.checked_add(size).ok_or("wraps around")?;
    let start = addr & !(FRAME_SIZE - 1);
    let end = end
        .checked_next_multiple_of(FRAME_SIZE)
        .filter(|&e| e <= MAX_ADDR)
        .ok_or("beyond the p2m's reach")?;
    if start < LOW_END {
        return Err("below 1 MiB (firmware and legacy areas)");
    }
    if start < PLATFORM.1 && PLATFORM.0 < end {
        return Err("over the interrupt controllers and timers at 0xfec00000-0xfeffffff");
    }
    if ram.iter().any(|r| start < r.end && r.start < end) {
        return Err("over host RAM");
    }
    Ok((start, end))
}

/// Sizes the BARs of a present function (its decoding switched off meanwhile, as Xen and
/// Linux do) and finds its MSI and MSI-X capabilities.
fn probe(cfg: &mut impl ConfigSpace, bdf: Bdf) -> Device {
    let header = cfg.read(bdf, HEADER_TYPE, 1) & 0x7f;
    let (count, rom) = match header {
        0 => (6u8, Some(ROM_TYPE0)),
        1 => (2, Some(ROM_TYPE1)),
        _ => (0, None),
    };
    let mut dev = Device {
        bars: ArrayVec::new(),
        denied: ArrayVec::new(),
        msi: None,
        pointers: ArrayVec::new(),
        other_header: header > 1,
    };
    let command = cfg.read(bdf, COMMAND, 2);
    let decode = command & (CMD_IO | CMD_MEMORY);
    if decode != 0 {
        cfg.write(bdf, COMMAND, 2, command & !decode);
    }
    let mut i = 0u8;
    while i < count {
        let reg = BAR0 + 4 * i;
        let orig = cfg.read(bdf, reg, 4);
        if orig & 1 != 0 {
            dev.bars.push(bar(Kind::Io, reg, 0));
            i += 1;
            continue;
        }
        let wide = (orig >> 1) & 3 == 2 && i + 1 < count;
        cfg.write(bdf, reg, 4, u32::MAX);
        let lo = cfg.read(bdf, reg, 4) & !0xf;
        cfg.write(bdf, reg, 4, orig);
        let mask = if wide {
            let hi_orig = cfg.read(bdf, reg + 4, 4);
            cfg.write(bdf, reg + 4, 4, u32::MAX);
            let hi = cfg.read(bdf, reg + 4, 4);
            cfg.write(bdf, reg + 4, 4, hi_orig);
            u64::from(lo) | (u64::from(hi) << 32)
        } else if lo == 0 {
            0
        } else {
            u64::from(lo) | 0xffff_ffff_0000_0000
        };
        // The size is the lowest address bit the BAR implements.
        let size = mask & mask.wrapping_neg();
        let kind = match (size, wide) {
            (0, _) => Kind::Unused,
            (_, true) => Kind::Mem64,
            (_, false) => Kind::Mem32,
        };
        dev.bars.push(bar(kind, reg, size));
        if wide {
            dev.bars.push(bar(Kind::Mem64High, reg + 4, 0));
            i += 2;
        } else {
            i += 1;
        }
    }
    if let Some(reg) = rom {
        let orig = cfg.read(bdf, reg, 4);
        cfg.write(bdf, reg, 4, ROM_ADDRESS);
        let mask = cfg.read(bdf, reg, 4) & ROM_ADDRESS;
        cfg.write(bdf, reg, 4, orig);
        let size = u64::from(mask & mask.wrapping_neg());
        let kind = if size == 0 { Kind::Unused } else { Kind::Rom };
        dev.bars.push(bar(kind, reg, size));
    }
    if decode != 0 {
        cfg.write(bdf, COMMAND, 2, command);
    }
    if header <= 1 && cfg.read(bdf, STATUS, 2) & STATUS_CAP_LIST != 0 {
        let mut ptr = (cfg.read(bdf, CAP_PTR, 1) & 0xfc) as u8;
        // Where the pointer to the current capability is read from.
        let mut pointer_at = CAP_PTR;
        // A list longer than configuration space can hold is a loop.
        for _ in 0..48 {
            if ptr < 0x40 {
                break;
            }
            let id = cfg.read(bdf, ptr, 1);
            let next = (cfg.read(bdf, ptr + 1, 1) & 0xfc) as u8;
            if id == CAP_MSIX {
                match dev.pointers.iter_mut().find(|p| p.0 == pointer_at) {
                    Some(p) => p.1 = next,
                    None => {
                        let _ = dev.pointers.try_push((pointer_at, next));
                    }
                }
            } else {
                pointer_at = ptr + 1;
            }
            let len = match id {
                CAP_MSI if dev.msi.is_none() && ptr <= 0xe8 => {
                    let control = cfg.read(bdf, ptr + 2, 2);
                    // MSI starts off: the device sends nothing until dom0 enables it.
                    if control & Msi::ENABLE != 0 {
                        cfg.write(bdf, ptr + 2, 2, control & !Msi::ENABLE);
                    }
                    dev.msi = Some(Msi {
                        pos: ptr,
                        wide: control & (1 << 7) != 0,
                        masking: control & (1 << 8) != 0,
                        enabled: false,
                        addr_lo: 0,
                        addr_hi: 0,
                        data: 0,
                        slot: None,
                    });
                    0
                }
                // A second MSI capability (malformed) is read-only.
                CAP_MSI => 24,
                CAP_MSIX => 12,
                _ => 0,
            };
            if len != 0 {
                let start = u16::from(ptr);
                let _ = dev.denied.try_push((start, (start + len).min(0x100)));
            }
            ptr = next;
        }
    }
    dev
}

fn bar(kind: Kind, reg: u8, size: u64) -> Bar {
    Bar {
        kind,
        reg,
        size,
        placed: None,
    }
}

/// dom0's p2m behind [`Mmio`]; counts the pages unmapped so the caller can flush.
#[cfg(target_os = "none")]
struct Dom0P2m<'a, F: pagetable::Format> {
    mem: &'a crate::domain::memory::GuestMemory<F>,
    unmapped: u64,
}

#[cfg(target_os = "none")]
impl<F: pagetable::Format> Mmio for Dom0P2m<'_, F> {
    fn map(&mut self, start: u64, end: u64) -> Result<(), &'static str> {
        use crate::domain::memory::MmioP2mError;
        match self.mem.map_mmio(start, end - start) {
            Ok(_) => Ok(()),
            Err(MmioP2mError::BadRange) => Err("not a range the p2m can map"),
            Err(MmioP2mError::Occupied { .. }) => {
                Err("dom0's p2m has something else there (RAM, a shared or granted page)")
            }
            Err(MmioP2mError::P2m(_)) => Err("no memory for dom0's p2m tables"),
        }
    }

    fn unmap(&mut self, start: u64, end: u64, keep: &dyn Fn(u64) -> bool) {
        self.unmapped += self.mem.unmap_mmio(start, end - start, keep);
    }
}

#[cfg(target_os = "none")]
impl<F: pagetable::Format> MsiSlots for Dom0P2m<'_, F> {
    fn alloc(&mut self) -> Option<usize> {
        crate::arch::x86::msi::alloc()
    }

    fn free(&mut self, slot: usize) {
        crate::arch::x86::msi::free(slot);
    }

    fn set_target(&mut self, slot: usize, dom0: Message) {
        crate::arch::x86::msi::set_target(slot, dom0);
    }

    fn host_message(&self, slot: usize) -> Message {
        crate::arch::x86::msi::host_message(slot)
    }
}

/// A port access by the control domain at 0xCF8..0xCFF: `rax` holds the value written or
/// receives the value read (the low byte or word replaced; a dword zero-extended).
#[cfg(target_os = "none")]
pub fn port_io<B: super::Backend>(
    dom: &crate::domain::Domain<B>,
    io: super::IoAccess,
    rax: &mut u64,
) {
    let size = if matches!(io.size, 1 | 2 | 4) {
        io.size
    } else {
        4
    };
    let write = io.write.then_some(*rax as u32);
    let mut p2m = Dom0P2m {
        mem: &dom.mem,
        unmapped: 0,
    };
    let read = {
        let mut host = crate::arch::x86::pci::HOST.lock();
        let host = &mut *host;
        let ram = crate::mm::paging::host_ram();
        host.vpci.allow_dma(dom.mem.is_identity());
        host.vpci
            .access(&mut host.ports, &mut p2m, ram, io.port, size, write)
    };
    if p2m.unmapped != 0 {
        // Every vCPU drops its cached translations before it runs again.
        dom.p2m_changed();
    }
    if let Some(v) = read {
        *rax = match size {
            1 => (*rax & !0xff) | u64::from(v & 0xff),
            2 => (*rax & !0xffff) | u64::from(v & 0xffff),
            _ => u64::from(v),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// One function's configuration space with BARs that decode like hardware.
    struct Fake {
        bdf: Bdf,
        regs: [u8; 256],
        /// Size of each BAR register's decoder (0: read-only zero), by BAR index; the ROM
        /// at index 6.
        sizes: [u64; 7],
        writes: Vec<(u8, u8, u32)>,
    }

    impl Fake {
        fn new() -> Fake {
            let mut f = Fake {
                bdf: Bdf(0x0018),
                regs: [0; 256],
                sizes: [0; 7],
                writes: Vec::new(),
            };
            f.set(0, 4, 0x11e8_1234);
            f
        }
        fn set(&mut self, reg: u8, size: u8, v: u32) {
            for i in 0..size {
                self.regs[usize::from(reg + i)] = (v >> (8 * i)) as u8;
            }
        }
        fn get(&self, reg: u8, size: u8) -> u32 {
            (0..size).fold(0, |acc, i| {
                acc | (u32::from(self.regs[usize::from(reg + i)]) << (8 * i))
            })
        }
    }

    impl ConfigSpace for Fake {
        fn read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
            if bdf != self.bdf {
                return all_ones(size);
            }
            self.get(reg, size)
        }
        fn write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
            assert!(valid_access(reg, size));
            if bdf != self.bdf {
                return;
            }
            self.writes.push((reg, size, value));
            let dword = reg & !3;
            let idx = match dword {
                0x10..=0x27 => Some(usize::from((dword - 0x10) / 4)),
                0x30 => Some(6),
                _ => None,
            };
            let Some(idx) = idx else {
                self.set(reg, size, value);
                return;
            };
            let merged = merge(self.get(dword, 4), reg & 3, size, value);
            let low = self.get(dword, 4);
            let size64 = self.sizes[idx];
            let v = if idx == 6 {
                if size64 == 0 {
                    0
                } else {
                    (merged & (!(size64 as u32 - 1) | 1)) & (ROM_ADDRESS | 1)
                }
            } else if size64 == 0 {
                // The high half of a 64-bit BAR (sizes[idx - 1] holds its size) or unused.
                if idx > 0 && self.sizes[idx - 1] > u64::from(u32::MAX) {
                    merged & (!(self.sizes[idx - 1] - 1) >> 32) as u32
                } else if idx > 0 && self.get(dword - 4, 4) & 0x6 == 4 {
                    merged
                } else {
                    0
                }
            } else {
                (merged & !((size64 as u32).wrapping_sub(1)) & !0xf) | (low & 0xf)
            };
            self.set(dword, 4, v);
        }
    }

    #[derive(Default)]
    struct P2m {
        mapped: Vec<(u64, u64)>,
        refuse: bool,
        /// MSI slots: the target of each bound one.
        slots: Vec<Option<Message>>,
        /// Slots that exist (alloc fails past them).
        max_slots: usize,
        /// For each unmap, whether its first page was to be kept (another BAR's).
        kept: Vec<bool>,
    }

    impl MsiSlots for P2m {
        fn alloc(&mut self) -> Option<usize> {
            if let Some(i) = self.slots.iter().position(Option::is_none) {
                self.slots[i] = Some(Message {
                    address: 0,
                    data: 0,
                });
                return Some(i);
            }
            (self.slots.len() < self.max_slots).then(|| {
                self.slots.push(Some(Message {
                    address: 0,
                    data: 0,
                }));
                self.slots.len() - 1
            })
        }
        fn free(&mut self, slot: usize) {
            self.slots[slot] = None;
        }
        fn set_target(&mut self, slot: usize, dom0: Message) {
            assert!(self.slots[slot].is_some(), "target of an unbound slot");
            self.slots[slot] = Some(dom0);
        }
        fn host_message(&self, slot: usize) -> Message {
            Message {
                address: 0xfee0_0000,
                data: 0xd0 + slot as u16,
            }
        }
    }

    impl Mmio for P2m {
        fn map(&mut self, s: u64, e: u64) -> Result<(), &'static str> {
            if self.refuse {
                return Err("occupied");
            }
            self.mapped.push((s, e));
            Ok(())
        }
        fn unmap(&mut self, s: u64, e: u64, keep: &dyn Fn(u64) -> bool) {
            let i = self.mapped.iter().position(|&r| r == (s, e));
            self.mapped.remove(i.expect("unmapping what was mapped"));
            self.kept.push(keep(s));
        }
    }

    const RAM: &[PhysRange] = &[
        PhysRange::new(0, 0x9f000),
        PhysRange::new(0x10_0000, 0x4000_0000),
    ];

    fn select(st: &mut State, f: &mut Fake, p: &mut P2m, reg: u8) {
        let latch = address(f.bdf, reg);
        st.access(f, p, RAM, 0xcf8, 4, Some(latch));
    }

    fn cfg_write(st: &mut State, f: &mut Fake, p: &mut P2m, reg: u8, size: u8, v: u32) {
        select(st, f, p, reg);
        st.access(f, p, RAM, 0xcfc + u16::from(reg & 3), size, Some(v));
    }

    fn cfg_read(st: &mut State, f: &mut Fake, p: &mut P2m, reg: u8, size: u8) -> u32 {
        select(st, f, p, reg);
        st.access(f, p, RAM, 0xcfc + u16::from(reg & 3), size, None)
            .unwrap()
    }

    /// A device with a 1 MiB 32-bit BAR0 at 0xfea00000, a 16 KiB 64-bit BAR2 at
    /// 0x1_0000_0000 and a 256 KiB ROM, memory decoding off.
    fn device() -> Fake {
        let mut f = Fake::new();
        f.sizes[0] = 1 << 20;
        f.sizes[2] = 16 << 10;
        f.sizes[6] = 256 << 10;
        f.set(0x10, 4, 0xfea0_0000);
        f.set(0x18, 4, 0x0000_0004);
        f.set(0x1c, 4, 0x1);
        f.set(0x30, 4, 0xfeb0_0000);
        f
    }

    #[test]
    fn latch_reads_back_and_other_sizes_float() {
        let (mut st, mut f, mut p) = (State::new(), Fake::new(), P2m::default());
        st.access(&mut f, &mut p, RAM, 0xcf8, 4, Some(0x8000_0000));
        assert_eq!(
            st.access(&mut f, &mut p, RAM, 0xcf8, 4, None),
            Some(0x8000_0000)
        );
        assert_eq!(st.access(&mut f, &mut p, RAM, 0xcf9, 1, None), Some(0xff));
        assert_eq!(st.access(&mut f, &mut p, RAM, 0xcfb, 1, Some(1)), None);
        // Not enabled: nothing selected.
        st.access(&mut f, &mut p, RAM, 0xcf8, 4, Some(0x1800));
        assert_eq!(
            st.access(&mut f, &mut p, RAM, 0xcfc, 4, None),
            Some(u32::MAX)
        );
        // A dword at 0xcfe would cross the window.
        st.access(&mut f, &mut p, RAM, 0xcf8, 4, Some(0x8000_1800));
        assert_eq!(
            st.access(&mut f, &mut p, RAM, 0xcfe, 4, None),
            Some(u32::MAX)
        );
    }

    #[test]
    fn reads_pass_through_at_every_width() {
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0, 4), 0x11e8_1234);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 2, 2), 0x11e8);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 3, 1), 0x11);
        // Another function: nothing there.
        st.access(&mut f, &mut p, RAM, 0xcf8, 4, Some(address(Bdf(0x0020), 0)));
        assert_eq!(
            st.access(&mut f, &mut p, RAM, 0xcfc, 4, None),
            Some(u32::MAX)
        );
        assert_eq!(st.access(&mut f, &mut p, RAM, 0xcfc, 2, Some(6)), None);
        assert!(
            f.writes.iter().all(|w| w.0 != 0),
            "no write reached a vendor ID"
        );
    }

    #[test]
    fn probe_sizes_bars_and_restores_them() {
        let mut f = device();
        let bdf = f.bdf;
        let dev = probe(&mut f, bdf);
        let kinds: Vec<_> = dev.bars.iter().map(|b| (b.kind, b.reg, b.size)).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Mem32, 0x10, 1 << 20),
                (Kind::Unused, 0x14, 0),
                (Kind::Mem64, 0x18, 16 << 10),
                (Kind::Mem64High, 0x1c, 0),
                (Kind::Unused, 0x20, 0),
                (Kind::Unused, 0x24, 0),
                (Kind::Rom, 0x30, 256 << 10),
            ]
        );
        assert_eq!(f.get(0x10, 4), 0xfea0_0000);
        assert_eq!(f.get(0x18, 4), 0x4);
        assert_eq!(f.get(0x1c, 4), 0x1);
        assert_eq!(f.get(0x30, 4), 0xfeb0_0000);
    }

    #[test]
    fn decoding_maps_and_unmaps_bars() {
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY | CMD_MASTER);
        assert_eq!(
            p.mapped,
            vec![(0xfea0_0000, 0xfeb0_0000), (0x1_0000_0000, 0x1_0000_4000)]
        );
        assert_eq!(f.get(COMMAND, 2), CMD_MEMORY, "bus mastering stays off");
        // The ROM maps once enabled.
        cfg_write(&mut st, &mut f, &mut p, 0x30, 4, 0xfeb0_0001);
        assert_eq!(p.mapped.len(), 3);
        assert!(p.mapped.contains(&(0xfeb0_0000, 0xfeb4_0000)));
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, 0);
        assert!(p.mapped.is_empty());
    }

    #[test]
    fn sizing_with_decoding_off_then_moving() {
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        // Linux's sizing: all ones, read, restore; then a new address.
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, u32::MAX);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x10, 4), 0xfff0_0000);
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0xfea0_0000);
        cfg_write(&mut st, &mut f, &mut p, 0x12, 2, 0xfe90);
        assert_eq!(f.get(0x10, 4), 0xfe90_0000);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY);
        assert!(p.mapped.contains(&(0xfe90_0000, 0xfea0_0000)));
        // Moving while decoding is dropped; rewriting the same value is not a move.
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0xfe80_0000);
        assert_eq!(f.get(0x10, 4), 0xfe90_0000);
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0xfe90_0000);
        // Off, move, on: the old range goes, the new one comes.
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, 0);
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0xfe80_0000);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY);
        assert!(p.mapped.contains(&(0xfe80_0000, 0xfe90_0000)));
        assert!(!p.mapped.contains(&(0xfe90_0000, 0xfea0_0000)));
    }

    #[test]
    fn bars_over_ram_or_platform_are_refused() {
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0x0800_0000); // host RAM
        cfg_write(&mut st, &mut f, &mut p, 0x18, 4, 0xfee0_0004); // the local APIC
        cfg_write(&mut st, &mut f, &mut p, 0x1c, 4, 0);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY);
        assert!(p.mapped.is_empty());
        // Turning decoding off unmaps nothing (nothing was mapped).
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, 0);
        assert!(pages(0x9f000, 0x1000, RAM).is_err(), "below 1 MiB");
        assert!(pages(u64::MAX - 0xfff, 0x1000, RAM).is_err(), "wraps");
        assert!(
            pages(0xffff_f000_0000, 0x2000_0000, RAM).is_err(),
            "beyond 2^48"
        );
        assert!(
            pages(0x3fff_f000, 0x2000, RAM).is_err(),
            "straddles RAM's end"
        );
        assert_eq!(
            pages(0x4000_0010, 0x10, RAM),
            Ok((0x4000_0000, 0x4000_1000))
        );
        // A p2m refusal leaves the BAR unmapped, and off unmaps nothing.
        p.refuse = true;
        cfg_write(&mut st, &mut f, &mut p, 0x10, 4, 0xfea0_0000);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, 0);
        assert!(p.mapped.is_empty());
    }

    #[test]
    fn a_page_two_bars_share_stays_until_both_go() {
        let (mut st, mut f, mut p) = (State::new(), Fake::new(), P2m::default());
        f.sizes[0] = 0x100;
        f.sizes[1] = 0x100;
        f.set(0x10, 4, 0xfeb0_0000);
        f.set(0x14, 4, 0xfeb0_0100);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MEMORY);
        assert_eq!(p.mapped, vec![(0xfeb0_0000, 0xfeb0_1000); 2]);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, 0);
        assert!(p.mapped.is_empty());
        assert_eq!(
            p.kept,
            vec![true, false],
            "the first unmap keeps BAR1's page"
        );
    }

    /// A device with a 64-bit MSI capability with per-vector masking at 0x40 (next 0x60)
    /// and an MSI-X capability at 0x60.
    fn msi_device() -> (State, Fake, P2m) {
        let (st, mut f) = (State::new(), device());
        f.set(STATUS, 2, STATUS_CAP_LIST);
        f.set(CAP_PTR, 1, 0x40);
        f.set(0x40, 4, 0x0186_6005); // MSI, 64-bit, masking, 8 vectors capable, next 0x60
        f.set(0x60, 4, 0x0000_0011); // MSI-X, last
        let p = P2m {
            max_slots: 1,
            ..P2m::default()
        };
        (st, f, p)
    }

    #[test]
    fn msi_is_mediated() {
        let (mut st, mut f, mut p) = msi_device();
        // Linux's order: address, data, then enable (one vector: MME 0).
        cfg_write(&mut st, &mut f, &mut p, 0x44, 4, 0xfee0_1000);
        cfg_write(&mut st, &mut f, &mut p, 0x48, 4, 0);
        cfg_write(&mut st, &mut f, &mut p, 0x4c, 2, 0x4041);
        assert_eq!(f.get(0x42, 2) & 1, 0, "not on before dom0 enables it");
        assert!(p.slots.is_empty());
        cfg_write(&mut st, &mut f, &mut p, 0x42, 2, 0x0001);
        // The device sends the slot's host message; dom0's is the slot's target.
        assert_eq!(f.get(0x44, 4), 0xfee0_0000);
        assert_eq!(f.get(0x48, 4), 0);
        assert_eq!(f.get(0x4c, 2), 0xd0);
        assert_eq!(f.get(0x42, 2) & 0x71, 1, "enabled, one message");
        let m = p.slots[0].unwrap();
        assert_eq!((m.address, m.data), (0xfee0_1000, 0x4041));
        assert_eq!(
            (m.dest(), m.vector(), m.delivery(), m.logical()),
            (1, 0x41, 0, false)
        );
        // dom0 reads back what it wrote, and one vector capable only.
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x44, 4), 0xfee0_1000);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x4c, 2), 0x4041);
        // (and the list ends after MSI: the MSI-X capability at 0x60 is left out).
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x40, 4), 0x0181_0005);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x4c, 4), 0x4041);
        // A new destination while on: the target follows, the device is unchanged.
        cfg_write(&mut st, &mut f, &mut p, 0x44, 4, 0xfee0_2000);
        assert_eq!(p.slots[0].unwrap().dest(), 2);
        assert_eq!(f.get(0x44, 4), 0xfee0_0000);
        // Mask bits are the device's own; pending bits read-only.
        cfg_write(&mut st, &mut f, &mut p, 0x50, 4, 1);
        assert_eq!(f.get(0x50, 4), 1);
        cfg_write(&mut st, &mut f, &mut p, 0x54, 4, 1);
        assert_eq!(f.get(0x54, 4), 0);
        // Off: the device stops, the slot is free again.
        cfg_write(&mut st, &mut f, &mut p, 0x42, 1, 0);
        assert_eq!(f.get(0x42, 2) & 1, 0);
        assert_eq!(p.slots, vec![None]);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x44, 4), 0xfee0_2000);
        // A dword write over id, next and control: only enable counts.
        cfg_write(&mut st, &mut f, &mut p, 0x40, 4, 0xffff_ffff);
        assert_eq!(f.get(0x40, 2), 0x6005);
        assert_eq!(f.get(0x42, 2) & 0x71, 1);
        assert!(p.slots[0].is_some());
    }

    #[test]
    fn msi_without_a_free_vector_stays_off() {
        let (mut st, mut f, mut p) = msi_device();
        p.max_slots = 0;
        cfg_write(&mut st, &mut f, &mut p, 0x42, 2, 1);
        assert_eq!(f.get(0x42, 2) & 1, 0);
        // dom0 sees its enable bit; nothing is delivered.
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x42, 2) & 1, 1);
    }

    #[test]
    fn msix_stays_read_only_and_out_of_the_list() {
        let (mut st, mut f, mut p) = msi_device();
        // MSI at 0x40 -> MSI-X at 0x60 -> a vendor capability at 0x70 -> MSI-X at 0x80.
        f.set(0x60, 4, 0x0000_7011);
        f.set(0x70, 4, 0x0000_8009);
        f.set(0x80, 4, 0x0000_0011);
        cfg_write(&mut st, &mut f, &mut p, 0x62, 2, 0x8000);
        assert_eq!(f.get(0x60, 4), 0x7011);
        // The list as dom0 walks it: MSI, then the vendor capability, then its end.
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, CAP_PTR, 1), 0x40);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x41, 1), 0x70);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x40, 4) & 0xff00, 0x7000);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x70, 2), 0x0009);
        // MSI-X first in the list: the list starts after it.
        let (mut st, mut f, mut p) = msi_device();
        f.set(CAP_PTR, 1, 0x60);
        f.set(0x60, 4, 0x0000_4011);
        f.set(0x40, 4, 0x0180_0005);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, CAP_PTR, 1), 0x40);
        assert_eq!(cfg_read(&mut st, &mut f, &mut p, 0x41, 1), 0x00);
        let (mut st, mut f, mut p) = msi_device();
        // Beyond both capabilities writes pass.
        cfg_write(&mut st, &mut f, &mut p, 0x6c, 1, 0x7);
        assert_eq!(f.get(0x6c, 1), 0x7);
    }

    #[test]
    fn bus_mastering_only_with_identity_ram() {
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MASTER);
        assert_eq!(f.get(COMMAND, 2) & CMD_MASTER, 0);
        st.allow_dma(true);
        cfg_write(&mut st, &mut f, &mut p, COMMAND, 2, CMD_MASTER);
        assert_eq!(f.get(COMMAND, 2) & CMD_MASTER, CMD_MASTER);
    }

    #[test]
    fn any_access_sequence_is_handled() {
        // dom0 is hostile too: random latches, ports, sizes and values never panic, and
        // nothing mapped ever lies over RAM or the platform window.
        let (mut st, mut f, mut p) = (State::new(), device(), P2m::default());
        f.set(STATUS, 2, STATUS_CAP_LIST);
        f.set(CAP_PTR, 1, 0x40);
        f.set(0x40, 4, 0x0180_0005);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = 0xcf8 + (x & 7) as u16;
            let size = [1, 2, 4, 3, 0][(x >> 3) as usize % 5];
            let value = (x >> 32) as u32;
            let write = (x >> 8) & 1 == 0;
            if port == 0xcf8 && size == 4 && write && (x >> 9) & 3 != 0 {
                // Mostly the fake's function, its BAR and command registers.
                let reg = [0x04, 0x10, 0x18, 0x1c, 0x30, 0x40, 0x44][(x >> 11) as usize % 7];
                let latch = address(f.bdf, reg);
                st.access(&mut f, &mut p, RAM, port, 4, Some(latch));
                continue;
            }
            let r = st.access(&mut f, &mut p, RAM, port, size, write.then_some(value));
            assert_eq!(r.is_some(), !write);
            for &(s, e) in &p.mapped {
                assert!(pages(s, e - s, RAM) == Ok((s, e)), "{s:#x}-{e:#x} mapped");
            }
        }
        assert_eq!(f.get(COMMAND, 2) & CMD_MASTER, 0);
    }

    #[test]
    fn hostile_cap_list_loops_end() {
        let mut f = device();
        f.set(STATUS, 2, STATUS_CAP_LIST);
        f.set(CAP_PTR, 1, 0x40);
        f.set(0x40, 2, 0x4005); // MSI pointing at itself
        let bdf = f.bdf;
        let dev = probe(&mut f, bdf);
        assert!(dev.denied.len() <= 4);
    }

    #[test]
    fn address_layout() {
        assert_eq!(address(Bdf(0x0018), 0x10), 0x8000_1810);
        assert_eq!(address(Bdf(0xffff), 0xff), 0x80ff_fffc);
        assert_eq!(alloc::format!("{}", Bdf(0x0119)), "01:03.1");
    }

    #[test]
    fn accesses_stay_in_one_dword() {
        assert!(valid_access(0x04, 2) && valid_access(0x06, 2) && valid_access(0x0f, 1));
        assert!(valid_access(0x10, 4));
        assert!(!valid_access(0x12, 4) && !valid_access(0x07, 2) && !valid_access(0x10, 3));
        assert!(!valid_access(0x10, 0) && !valid_access(0x10, 8));
    }

    #[test]
    fn merge_writes_bytes_in_place() {
        assert_eq!(merge(0x1122_3344, 1, 1, 0xaa), 0x1122_aa44);
        assert_eq!(merge(0x1122_3344, 2, 2, 0xbbcc), 0xbbcc_3344);
        assert_eq!(merge(0x1122_3344, 0, 4, 0xdead_beef), 0xdead_beef);
    }
}
