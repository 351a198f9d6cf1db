//! The shared_info page: per-vCPU `vcpu_info` (event flags and pvclock time) and the
//! wallclock. The hypervisor owns the frame; the guest maps it with `add_to_physmap`.

use crate::domain::Domain;
use crate::hvm::Backend;
use crate::mm::phys;
use core::mem::offset_of;
use xen_abi::xen::{SharedInfo, VcpuInfo, VcpuTimeInfo};
use zerocopy::IntoBytes;

/// The domain's shared_info frame, allocated (zeroed, pvclock filled in) on first use.
pub fn frame<B: Backend>(dom: &mut Domain<B>) -> Option<u64> {
    if dom.shared_info.is_none() {
        dom.shared_info = Some(phys::alloc_zeroed(1, 1)?);
        update_time(dom);
    }
    dom.shared_info
}

/// Publishes the current system time in vCPU 0's pvclock, with the version protocol
/// (odd while updating) so a guest never uses a torn record.
pub fn update_time<B: Backend>(dom: &Domain<B>) {
    let Some(frame) = dom.shared_info else { return };
    let (tsc, ns) = crate::time::now();
    let scale = crate::time::scale();
    let base = offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, time);
    let version_at = base + offset_of!(VcpuTimeInfo, version);
    let old = read_u32(frame, version_at);
    write_bytes(frame, version_at, &(old | 1).to_le_bytes());
    let t = VcpuTimeInfo {
        version: old | 1,
        pad0: 0,
        tsc_timestamp: tsc,
        system_time: ns,
        tsc_to_system_mul: scale.mul,
        tsc_shift: scale.shift,
        flags: 0,
        pad1: [0; 2],
    };
    write_bytes(frame, base, t.as_bytes());
    write_bytes(frame, version_at, &((old | 1) + 1).to_le_bytes());
}

fn read_u32(frame: u64, off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: `frame` is this domain's shared_info frame, a hypervisor-owned page in
        // the direct map; `off + i` is below 4096 (offsets inside SharedInfo).
        *x = unsafe { phys::to_virt(frame + (off + i) as u64).read_volatile() };
    }
    u32::from_le_bytes(b)
}

fn write_bytes(frame: u64, off: usize, data: &[u8]) {
    assert!(off + data.len() <= 4096);
    for (i, b) in data.iter().enumerate() {
        // SAFETY: as in `read_u32`; the guest may read concurrently, which the pvclock
        // version protocol makes harmless.
        unsafe { phys::to_virt(frame + (off + i) as u64).write_volatile(*b) };
    }
}
