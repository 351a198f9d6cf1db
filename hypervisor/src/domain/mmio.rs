//! Emulated MMIO: the instruction behind a nested page fault on a guest-physical address
//! that a device model (or nothing) backs is decoded and executed by the `x86-emu` crate.
//!
//! Two regions today: the vCPU's **xAPIC page** at its APIC base while its LAPIC is in
//! xAPIC mode (registers of [`crate::hvm::vlapic::Vlapic`]), and the **MMIO hole**:
//! guest-physical addresses below 4 GiB that hold neither RAM nor a Xen page. As on Xen,
//! where such an access finds no device model, reads return all ones and writes are
//! dropped, so probing for a device (an HPET at 0xfed00000, say) does not kill the guest.
//! Further device models (passthrough) plug in as further regions behind [`Region`].

use crate::hvm::{Access as NpfAccess, Backend, Event, GuestRegs, Vcpu as _};
use crate::xen::guest_access::{copy_from_guest, copy_to_guest};
use crate::xen::Cx;
use alloc::string::String;
use core::fmt::Write as _;
use x86_emu::{CpuMode, Exception, MmioFault, Outcome, Registers};

/// Top of the MMIO hole: everything unbacked below it is emulated.
const HOLE_END: u64 = 1 << 32;

const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;

/// Which emulated region a guest-physical address falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Unbacked guest-physical memory below 4 GiB: reads all ones, writes dropped.
    Hole,
    /// The vCPU's xAPIC register page (in xAPIC mode) starting at this address.
    Lapic(u64),
    /// The control domain's virtual I/O APIC with this index (`DomState::vioapics`), its
    /// register page starting at this address.
    Ioapic(usize, u64),
}

/// The emulated region behind a nested page fault at `gpa`, if any: only a data access
/// by an instruction (not a fetch, not the guest's own page walk) to an address that has
/// no p2m entry at all.
pub fn region<B: Backend>(cx: &Cx<'_, B>, gpa: u64, access: NpfAccess) -> Option<Region> {
    if access.execute || access.page_walk || cx.dom.mem.p2m_type(gpa).is_some() {
        return None;
    }
    if let Some(page) = cx.v.vlapic.mmio_page() {
        if gpa & !0xfff == page {
            return Some(Region::Lapic(page));
        }
    }
    if cx.dom.is_control() {
        let st = cx.dom.st.lock();
        if let Some((i, v)) = st
            .vioapics
            .iter()
            .enumerate()
            .find(|(_, v)| v.contains(gpa))
        {
            return Some(Region::Ioapic(i, v.base));
        }
    }
    (gpa < HOLE_END).then_some(Region::Hole)
}

/// What became of an emulated access.
pub enum Emulated {
    /// The instruction retired (or a REP string instruction made progress).
    Done,
    /// The guest gets this exception, as hardware would have raised it.
    Inject(Event),
    /// The domain ends with this report.
    Crash(String),
}

/// Emulates the instruction that faulted at `gpa` in `region`.
pub fn emulate<B: Backend>(
    cx: &mut Cx<'_, B>,
    gpa: u64,
    access: NpfAccess,
    region: Region,
) -> Emulated {
    let s = cx.v.hw.control_state();
    let e = cx.v.hw.emulation_state();
    let mode = if s.cr0 & CR0_PE == 0 || s.rflags & RFLAGS_VM != 0 {
        CpuMode::Real
    } else if s.efer & EFER_LMA != 0 {
        CpuMode::Long {
            cs_l: e.cs_long,
            cs_d: e.cs_default_big,
        }
    } else {
        CpuMode::Protected {
            cs_d: e.cs_default_big,
        }
    };
    let fetch_at = e.seg_base[1].wrapping_add(s.rip);
    let fetch_at = if mode.bitness() == 64 {
        fetch_at
    } else {
        fetch_at & 0xffff_ffff
    };
    let (bytes, len) = match cx.v.hw.exit_instruction_bytes() {
        Some(b) => b,
        None => match fetch(cx, fetch_at) {
            Some(b) => b,
            None => {
                return Emulated::Crash(alloc::format!(
                    "cannot fetch the instruction at {fetch_at:#x} that touched emulated \
                     MMIO at {gpa:#x}"
                ))
            }
        },
    };
    let fault = MmioFault {
        gpa,
        access: if access.write {
            x86_emu::Access::Write
        } else {
            x86_emu::Access::Read
        },
    };
    let mut cpu = registers(cx.v.hw.regs(), s.rsp, s.rip, s.rflags, e.seg_base);
    let result = {
        let mut mem = EmuMem { cx, region };
        x86_emu::emulate(&bytes[..len], mode, fault, &mut cpu, &mut mem)
    };
    // Registers changed by the iterations that completed stand even when a later one
    // failed, as when hardware faults in the middle of a REP string instruction.
    if write_back(&cpu, cx.v.hw.regs()) != s.rsp {
        // No instruction the emulator accepts has a reason to load RSP from a device.
        return Emulated::Crash(alloc::format!(
            "the instruction at {:#x} loads RSP from MMIO at {gpa:#x}",
            s.rip
        ));
    }
    match result {
        Ok(Outcome::Completed { .. } | Outcome::RepPending { .. }) => {
            cx.v.hw.complete_emulation(cpu.rip, cpu.rflags);
            Emulated::Done
        }
        Err(x86_emu::Error::Fault(ex)) => match ex {
            Exception::Ud => Emulated::Inject(Event::Exception {
                vector: 6,
                error_code: None,
            }),
            Exception::Gp(code) => Emulated::Inject(Event::Exception {
                vector: 13,
                error_code: Some(u32::from(code)),
            }),
            Exception::Ss(code) => Emulated::Inject(Event::Exception {
                vector: 12,
                error_code: Some(u32::from(code)),
            }),
            other => Emulated::Crash(alloc::format!(
                "{other:?} while emulating the instruction at {:#x} (MMIO at {gpa:#x})",
                s.rip
            )),
        },
        Err(err) => {
            let mut what = String::new();
            let _ = write!(
                what,
                "cannot emulate the instruction at {:#x} touching MMIO at {gpa:#x}: {err:?} \
                 (bytes",
                s.rip
            );
            for b in &bytes[..len] {
                let _ = write!(what, " {b:02x}");
            }
            what.push(')');
            Emulated::Crash(what)
        }
    }
}

/// Reads up to 15 instruction bytes at linear address `at`, fewer if the second page is
/// not readable (the decoder reports a truncated instruction if it needed them).
fn fetch<B: Backend>(cx: &Cx<'_, B>, at: u64) -> Option<([u8; 15], usize)> {
    let mut bytes = [0u8; 15];
    if copy_from_guest(cx, at, &mut bytes).is_ok() {
        return Some((bytes, 15));
    }
    let to_page_end = (4096 - (at % 4096)) as usize;
    let n = to_page_end.min(15);
    copy_from_guest(cx, at, &mut bytes[..n]).ok()?;
    Some((bytes, n))
}

/// The registers the emulator may read and change, in the hardware's numbering (RSP from
/// the VMCS/VMCB), written back by [`write_back`] once it is done.
fn registers(r: &GuestRegs, rsp: u64, rip: u64, rflags: u64, seg: [u64; 6]) -> Registers {
    let mut regs = *r;
    let mut gpr = [0; 16];
    for (n, g) in (0u8..).zip(gpr.iter_mut()) {
        *g = regs.by_encoding(n).map_or(rsp, |v| *v);
    }
    Registers {
        gpr,
        rflags,
        rip,
        seg,
    }
}

/// Writes the general-purpose registers back; RSP, which the VMCS/VMCB holds, is returned
/// for the caller to compare.
fn write_back(cpu: &Registers, r: &mut GuestRegs) -> u64 {
    for (n, &g) in (0u8..).zip(cpu.gpr.iter()) {
        if let Some(v) = r.by_encoding(n) {
            *v = g;
        }
    }
    cpu.gpr[4]
}

/// The device side (the region) and ordinary guest memory by linear address.
struct EmuMem<'c, 'a, B: Backend> {
    cx: &'c mut Cx<'a, B>,
    region: Region,
}

impl<B: Backend> x86_emu::Memory for EmuMem<'_, '_, B> {
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<u64, x86_emu::Error> {
        match self.region {
            Region::Hole => Ok(match size {
                8 => u64::MAX,
                n => (1u64 << (u32::from(n) * 8)) - 1,
            }),
            Region::Lapic(page) => {
                self.cx.v.vlapic.advance(crate::time::now().1);
                Ok(self.cx.v.vlapic.mmio_read(gpa - page, size))
            }
            Region::Ioapic(i, base) => {
                let st = self.cx.dom.st.lock();
                Ok(st
                    .vioapics
                    .get(i)
                    .map_or(0, |v| v.mmio_read(gpa - base, size)))
            }
        }
    }

    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) -> Result<(), x86_emu::Error> {
        match self.region {
            Region::Hole => {}
            Region::Lapic(page) => {
                self.cx.v.vlapic.advance(crate::time::now().1);
                let effect = self.cx.v.vlapic.mmio_write(gpa - page, size, value);
                super::run::sync_apic_timer(self.cx);
                super::run::apic_effect(self.cx, effect);
            }
            Region::Ioapic(i, base) => {
                let effect = {
                    let mut st = self.cx.dom.st.lock();
                    st.vioapics
                        .get_mut(i)
                        .map(|v| v.mmio_write(gpa - base, size, value))
                };
                if let Some(effect) = effect {
                    super::devirq::rte_written(self.cx.dom, i, effect);
                }
            }
        }
        Ok(())
    }

    fn guest_read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), x86_emu::Error> {
        copy_from_guest(self.cx, linear, buf).map_err(|_| unreadable(linear, false))
    }

    fn guest_write(&mut self, linear: u64, buf: &[u8]) -> Result<(), x86_emu::Error> {
        copy_to_guest(self.cx, linear, buf).map_err(|_| unreadable(linear, true))
    }
}

/// The other side of a string instruction is not ordinary guest memory (unmapped, or MMIO
/// itself): reported as a page fault the caller turns into the domain's end, since the
/// walker does not say which #PF hardware would have raised.
fn unreadable(linear: u64, write: bool) -> x86_emu::Error {
    x86_emu::Error::Fault(Exception::Pf {
        linear,
        error_code: if write { 2 } else { 0 },
    })
}

/// Called from the exit policy on a nested page fault: emulates the access if it falls in
/// an emulated region, else leaves it to the caller (None).
pub fn on_nested_page_fault<B: Backend>(
    cx: &mut Cx<'_, B>,
    gpa: u64,
    access: NpfAccess,
) -> Option<Emulated> {
    let region = region(cx, gpa, access)?;
    Some(emulate(cx, gpa, access, region))
}
