//! `physdev_op` (33): the control domain telling the hypervisor about the host's PCI
//! functions (`PHYSDEVOP_pci_device_add` and its older forms, and their removals), as
//! Linux's dom0 does for every function it finds (`drivers/xen/pci.c`). There is no
//! per-device state to keep yet (no IOMMU, no passthrough): a function that answers in
//! configuration space is accepted, one that does not is `-ENODEV`, segments other than
//! 0 (no MMCONFIG) are `-ENODEV`. Other commands are `-ENOSYS`, as from a Xen that lacks
//! them; callers other than the control domain get `-EPERM`.

use super::guest_access::copy_from_guest;
use super::{Cx, Reply};
use crate::hvm::vpci::Bdf;
use crate::hvm::Backend;
use xen_abi::errno::Errno;

/// `struct physdev_manage_pci { u8 bus; u8 devfn; }`.
const PHYSDEVOP_MANAGE_PCI_ADD: u64 = 15;
const PHYSDEVOP_MANAGE_PCI_REMOVE: u64 = 16;
/// `struct physdev_manage_pci_ext { u8 bus; u8 devfn; unsigned is_extfn, is_virtfn; ... }`.
const PHYSDEVOP_MANAGE_PCI_ADD_EXT: u64 = 20;
/// `struct physdev_pci_device_add { u16 seg; u8 bus; u8 devfn; u32 flags; ... }`.
const PHYSDEVOP_PCI_DEVICE_ADD: u64 = 25;
/// `struct physdev_pci_device { u16 seg; u8 bus; u8 devfn; }`.
const PHYSDEVOP_PCI_DEVICE_REMOVE: u64 = 26;

/// `HYPERVISOR_physdev_op(cmd, arg)`.
pub fn physdev_op<B: Backend>(cx: &mut Cx<'_, B>, cmd: u64, arg: u64) -> Result<Reply, Errno> {
    let (seg_first, add) = match cmd {
        PHYSDEVOP_MANAGE_PCI_ADD | PHYSDEVOP_MANAGE_PCI_ADD_EXT => (false, true),
        PHYSDEVOP_MANAGE_PCI_REMOVE => (false, false),
        PHYSDEVOP_PCI_DEVICE_ADD => (true, true),
        PHYSDEVOP_PCI_DEVICE_REMOVE => (true, false),
        _ => return Err(Errno::ENOSYS),
    };
    if !cx.dom.is_control() {
        return Err(Errno::EPERM);
    }
    let mut head = [0u8; 4];
    let len = if seg_first { 4 } else { 2 };
    copy_from_guest(cx, arg, &mut head[..len])?;
    let (seg, bus, devfn) = if seg_first {
        (u16::from_le_bytes([head[0], head[1]]), head[2], head[3])
    } else {
        (0, head[0], head[1])
    };
    if seg != 0 {
        return Err(Errno::ENODEV);
    }
    if !add {
        return Ok(Reply::Value(0));
    }
    let bdf = Bdf(u16::from(bus) << 8 | u16::from(devfn));
    let vendor = crate::arch::x86::pci::HOST.lock().ports.read(bdf, 0, 2);
    if vendor == 0xffff {
        return Err(Errno::ENODEV);
    }
    Ok(Reply::Value(0))
}
