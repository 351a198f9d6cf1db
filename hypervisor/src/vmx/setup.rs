//! VMCS initialisation for a new vCPU: execution controls, host state, and the PVH guest
//! state (Intel SDM Vol. 3C 25.2-25.8, 27.2-27.3 for the checks they must pass).
#![allow(unsafe_code)]

use super::controls::{proc2, Controls};
use super::cpu::{read_cr0, read_cr3, read_cr4};
use super::decode::{AccessRights, AR_UNUSABLE};
use super::fields::{Field, Seg};
use super::modes::Fixed;
use super::{entry, vmcs};
use crate::arch::x86::gdt;
use crate::arch::x86::regs::rdmsr;
use crate::hvm::{BackendError, PvhEntry};
use core::arch::asm;

/// The PAT value at reset (SDM Vol. 3A 11.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// Physical addresses of a vCPU's VMX pages.
#[derive(Clone, Copy, Debug)]
pub struct Pages {
    pub io_bitmaps: u64,
    pub msr_bitmap: u64,
}

/// Writes the execution, exit and entry controls and their tables.
pub fn controls(c: &Controls, pages: &Pages, eptp: u64, vpid: u16) -> Result<(), BackendError> {
    use vmcs::write;
    write(Field::PIN_BASED_CONTROLS, c.pin.into())?;
    write(Field::PRIMARY_PROC_CONTROLS, c.proc.into())?;
    write(Field::SECONDARY_PROC_CONTROLS, c.proc2.into())?;
    write(Field::EXIT_CONTROLS, c.exit.into())?;
    write(Field::ENTRY_CONTROLS, c.entry.into())?;
    write(
        Field::EXCEPTION_BITMAP,
        super::decode::EXCEPTION_BITMAP.into(),
    )?;
    write(Field::PAGE_FAULT_ERROR_MASK, 0)?;
    write(Field::PAGE_FAULT_ERROR_MATCH, 0)?;
    write(Field::CR3_TARGET_COUNT, 0)?;
    write(Field::EXIT_MSR_STORE_COUNT, 0)?;
    write(Field::EXIT_MSR_LOAD_COUNT, 0)?;
    write(Field::ENTRY_MSR_LOAD_COUNT, 0)?;
    write(Field::ENTRY_INTERRUPTION_INFO, 0)?;
    write(Field::IO_BITMAP_A, pages.io_bitmaps)?;
    write(Field::IO_BITMAP_B, pages.io_bitmaps + 4096)?;
    write(Field::MSR_BITMAP, pages.msr_bitmap)?;
    write(Field::EPT_POINTER, eptp)?;
    if c.proc2 & proc2::ENABLE_VPID != 0 {
        write(Field::VPID, vpid.into())?;
    }
    if c.proc2 & proc2::ENABLE_XSAVES != 0 {
        // Every XSS component exits (none is virtualized); the control is asked off.
        write(Field::XSS_EXIT_BITMAP, u64::MAX)?;
    }
    Ok(())
}

#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

fn sgdt() -> TablePointer {
    let mut p = TablePointer { limit: 0, base: 0 };
    // SAFETY: SGDT stores 10 bytes into `p`, which is exactly that large.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

fn sidt() -> TablePointer {
    let mut p = TablePointer { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `p`, which is exactly that large.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Base of the TSS named by `selector`, from the 16-byte system descriptor in the GDT.
fn tss_base(gdt_base: u64, selector: u16) -> u64 {
    let at = gdt_base + u64::from(selector & !7);
    // SAFETY: the GDT is this CPU's own table (the boot CPU's static one, or an AP's, leaked
    // by `gdt::init_ap`; mapped, readable, never freed), and the TR selector indexes a
    // 16-byte TSS descriptor inside it (the same index on every CPU).
    let (lo, hi) = unsafe {
        let p = at as *const u64;
        (p.read_unaligned(), p.add(1).read_unaligned())
    };
    ((lo >> 16) & 0xff_ffff) | ((lo >> 56) & 0xff) << 24 | (hi & 0xffff_ffff) << 32
}

fn selector(read: fn() -> u16) -> u64 {
    u64::from(read() & !7)
}

/// Writes the host-state area from the running CPU (HOST_RSP is written at each entry).
pub fn host_state() -> Result<(), BackendError> {
    use vmcs::write;
    use x86_64::instructions::segmentation::{Segment, DS, ES, FS, GS, SS};
    write(Field::HOST_CR0, read_cr0())?;
    write(Field::HOST_CR3, read_cr3())?;
    write(Field::HOST_CR4, read_cr4())?;
    write(Field::HOST_CS_SELECTOR, u64::from(gdt::code_selector()))?;
    write(Field::HOST_SS_SELECTOR, selector(|| SS::get_reg().0))?;
    write(Field::HOST_DS_SELECTOR, selector(|| DS::get_reg().0))?;
    write(Field::HOST_ES_SELECTOR, selector(|| ES::get_reg().0))?;
    write(Field::HOST_FS_SELECTOR, selector(|| FS::get_reg().0))?;
    write(Field::HOST_GS_SELECTOR, selector(|| GS::get_reg().0))?;
    write(Field::HOST_TR_SELECTOR, u64::from(gdt::tss_selector()))?;
    let gdtr = sgdt();
    write(Field::HOST_GDTR_BASE, gdtr.base)?;
    write(Field::HOST_IDTR_BASE, sidt().base)?;
    write(
        Field::HOST_TR_BASE,
        tss_base(gdtr.base, gdt::tss_selector()),
    )?;
    write(Field::HOST_FS_BASE, rdmsr(0xc000_0100))?;
    write(Field::HOST_GS_BASE, rdmsr(0xc000_0101))?;
    write(Field::HOST_SYSENTER_CS, rdmsr(0x174))?;
    write(Field::HOST_SYSENTER_ESP, rdmsr(0x175))?;
    write(Field::HOST_SYSENTER_EIP, rdmsr(0x176))?;
    write(Field::HOST_IA32_EFER, rdmsr(0xc000_0080))?;
    write(Field::HOST_IA32_PAT, rdmsr(0x277))?;
    write(Field::HOST_RIP, entry::exit_stub())?;
    Ok(())
}

/// Guest selectors for the PVH entry (any values with RPL 0 work; these match a flat GDT).
const CODE_SEL: u64 = 0x08;
const DATA_SEL: u64 = 0x10;
const TSS_SEL: u64 = 0x18;

/// The control registers and instruction pointer of a vCPU starting out: CR0 as the guest
/// sees it (`cr0`), CR4 and CR3 clear, DR7 and RFLAGS at reset values, RSP 0, RIP `rip`.
fn control_state(cr0: u64, rip: u64, fixed: &Fixed) -> Result<(), BackendError> {
    use vmcs::write;
    write(Field::CR0_GUEST_HOST_MASK, fixed.cr0_mask())?;
    write(Field::CR0_READ_SHADOW, cr0)?;
    write(Field::GUEST_CR0, fixed.cr0_real(cr0))?;
    write(Field::CR4_GUEST_HOST_MASK, fixed.cr4_mask())?;
    write(Field::CR4_READ_SHADOW, 0)?;
    write(Field::GUEST_CR4, fixed.cr4_real(0))?;
    write(Field::GUEST_CR3, 0)?;
    write(Field::GUEST_DR7, 0x400)?;
    write(Field::GUEST_RSP, 0)?;
    write(Field::GUEST_RIP, rip)?;
    write(Field::GUEST_RFLAGS, 0x2)
}

/// Writes the PVH start-of-day guest state (xen-pvh-abi.md §2.3): 32-bit protected mode,
/// paging off, flat segments, busy 32-bit TSS, EBX set by the caller in `GuestRegs`.
pub fn guest_state(start: PvhEntry, fixed: &Fixed) -> Result<(), BackendError> {
    use vmcs::write;
    const CR0_PE_ET: u64 = 0x11;
    control_state(CR0_PE_ET, start.rip.into(), fixed)?;
    for seg in Seg::ALL {
        let (sel, limit, ar) = match seg {
            Seg::Cs => (CODE_SEL, 0xffff_ffff, AccessRights::flat32(0xb).encode()),
            Seg::Tr => (TSS_SEL, 0x67, AccessRights::TSS_BUSY.encode()),
            Seg::Ldtr => (0, 0, AR_UNUSABLE),
            _ => (DATA_SEL, 0xffff_ffff, AccessRights::flat32(0x3).encode()),
        };
        write(seg.selector(), sel)?;
        write(seg.base(), 0)?;
        write(seg.limit(), limit)?;
        write(seg.access_rights(), ar.into())?;
    }
    write(Field::GUEST_GDTR_BASE, 0)?;
    write(Field::GUEST_GDTR_LIMIT, 0)?;
    write(Field::GUEST_IDTR_BASE, 0)?;
    write(Field::GUEST_IDTR_LIMIT, 0)?;
    write(Field::GUEST_IA32_DEBUGCTL, 0)?;
    write(Field::GUEST_IA32_PAT, PAT_RESET)?;
    write(Field::GUEST_IA32_EFER, 0)?;
    write(Field::GUEST_SYSENTER_CS, 0)?;
    write(Field::GUEST_SYSENTER_ESP, 0)?;
    write(Field::GUEST_SYSENTER_EIP, 0)?;
    write(Field::GUEST_INTERRUPTIBILITY, 0)?;
    write(Field::GUEST_ACTIVITY_STATE, 0)?;
    write(Field::GUEST_PENDING_DEBUG, 0)?;
    write(Field::VMCS_LINK_POINTER, u64::MAX)?;
    Ok(())
}

/// Writes the state after INIT followed by a SIPI with `vector` (SDM Vol. 3A table 9-1,
/// 9.4.4): real mode (unrestricted guest), CS = vector << 8 with base vector << 12, IP 0,
/// CR0 0x60000010 as the guest sees it (CD/NW not applied to the real CR0), 16-bit
/// segments with limit 0xffff, EFER 0. Activity state stays active: a vCPU waiting for
/// SIPI is simply not run.
pub fn sipi_state(vector: u8, fixed: &Fixed) -> Result<(), BackendError> {
    use vmcs::write;
    const CR0_INIT: u64 = 0x6000_0010;
    control_state(CR0_INIT, 0, fixed)?;
    let real = |typ: u8| {
        AccessRights {
            typ,
            s: true,
            dpl: 0,
            present: true,
            l: false,
            db: false,
            g: false,
        }
        .encode()
    };
    for seg in Seg::ALL {
        let (sel, base, ar) = match seg {
            // Accessed read/execute code; accessed read/write data.
            Seg::Cs => (u64::from(vector) << 8, u64::from(vector) << 12, real(0xb)),
            // A busy 16-bit TSS, as after INIT (allowed outside IA-32e mode).
            Seg::Tr => (
                0,
                0,
                AccessRights {
                    typ: 0x3,
                    s: false,
                    ..AccessRights::TSS_BUSY
                }
                .encode(),
            ),
            Seg::Ldtr => (0, 0, AR_UNUSABLE),
            _ => (0, 0, real(0x3)),
        };
        write(seg.selector(), sel)?;
        write(seg.base(), base)?;
        write(seg.limit(), 0xffff)?;
        write(seg.access_rights(), ar.into())?;
    }
    write(Field::GUEST_GDTR_BASE, 0)?;
    write(Field::GUEST_GDTR_LIMIT, 0xffff)?;
    write(Field::GUEST_IDTR_BASE, 0)?;
    write(Field::GUEST_IDTR_LIMIT, 0xffff)?;
    write(Field::GUEST_IA32_DEBUGCTL, 0)?;
    write(Field::GUEST_IA32_EFER, 0)?;
    write(Field::GUEST_INTERRUPTIBILITY, 0)?;
    write(Field::GUEST_ACTIVITY_STATE, 0)?;
    write(Field::GUEST_PENDING_DEBUG, 0)?;
    write(Field::ENTRY_INTERRUPTION_INFO, 0)?;
    write(Field::VMCS_LINK_POINTER, u64::MAX)?;
    Ok(())
}
