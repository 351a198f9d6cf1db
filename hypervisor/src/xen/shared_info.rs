//! The shared_info page and vcpu_info: event flags, pvclock time, the wallclock.
//!
//! The hypervisor owns the shared_info frame; the guest maps it with `add_to_physmap`.
//! A vCPU's `vcpu_info` starts in shared_info's slot 0 and may move into guest RAM
//! (`VCPUOP_register_vcpu_info`). Time is published in both places: Linux reads the TSC
//! frequency from slot 0 even after moving its vcpu_info.

use crate::domain::Domain;
use crate::hvm::Backend;
use crate::mm::phys;
use core::mem::offset_of;
use xen_abi::xen::{SharedInfo, VcpuInfo, VcpuTimeInfo};
use zerocopy::IntoBytes;

const VCPU_INFO_SIZE: usize = core::mem::size_of::<VcpuInfo>();
/// `vcpu_time_info.flags` bit 0: the TSC is stable and synchronised.
const PVCLOCK_TSC_STABLE: u8 = 1;

/// The domain's shared_info frame, allocated (zeroed, time and wallclock filled in) on
/// first use.
pub fn frame<B: Backend>(dom: &mut Domain<B>) -> Option<u64> {
    if dom.shared_info.is_none() {
        dom.shared_info = Some(phys::alloc_zeroed(1, 1)?);
        update_time(dom);
        update_wallclock(dom);
    }
    dom.shared_info
}

fn frame_read(frame: u64, off: usize, out: &mut [u8]) {
    assert!(off + out.len() <= 4096);
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: `frame` is this domain's shared_info frame, a hypervisor-owned page in
        // the direct map, and `off + i` < 4096 (checked above).
        *b = unsafe { phys::to_virt(frame + (off + i) as u64).read_volatile() };
    }
}

fn frame_write(frame: u64, off: usize, data: &[u8]) {
    assert!(off + data.len() <= 4096);
    for (i, b) in data.iter().enumerate() {
        // SAFETY: as in `frame_read`; concurrent guest reads are made harmless by the
        // version protocols of the fields written.
        unsafe { phys::to_virt(frame + (off + i) as u64).write_volatile(*b) };
    }
}

/// Reads bytes of vCPU 0's vcpu_info, wherever it lives; zeros if it does not exist yet.
fn vcpu_info_read<B: Backend>(dom: &Domain<B>, off: usize, out: &mut [u8]) {
    match (dom.xen_vcpu.vcpu_info_gpa, dom.shared_info) {
        (Some(gpa), _) => {
            if dom.mem.read(gpa + off as u64, out).is_err() {
                out.fill(0);
            }
        }
        (None, Some(frame)) => frame_read(frame, offset_of!(SharedInfo, vcpu_info) + off, out),
        (None, None) => out.fill(0),
    }
}

/// Writes bytes of vCPU 0's vcpu_info, wherever it lives.
fn vcpu_info_write<B: Backend>(dom: &Domain<B>, off: usize, data: &[u8]) {
    match (dom.xen_vcpu.vcpu_info_gpa, dom.shared_info) {
        (Some(gpa), _) => {
            let _ = dom.mem.write(gpa + off as u64, data);
        }
        (None, Some(frame)) => frame_write(frame, offset_of!(SharedInfo, vcpu_info) + off, data),
        (None, None) => {}
    }
}

/// A copy of vCPU 0's current vcpu_info.
pub fn read_vcpu_info<B: Backend>(dom: &Domain<B>) -> [u8; VCPU_INFO_SIZE] {
    let mut v = [0u8; VCPU_INFO_SIZE];
    vcpu_info_read(dom, 0, &mut v);
    v
}

/// Whether vCPU 0 has `evtchn_upcall_pending` set.
pub fn upcall_pending<B: Backend>(dom: &Domain<B>) -> bool {
    let mut b = [0u8; 1];
    vcpu_info_read(dom, offset_of!(VcpuInfo, evtchn_upcall_pending), &mut b);
    b[0] != 0
}

/// Publishes the current system time in vCPU 0's pvclock (in shared_info slot 0 and in
/// the registered vcpu_info), with the version protocol (odd while updating) so that the
/// guest never uses a torn record.
pub fn update_time<B: Backend>(dom: &Domain<B>) {
    let Some(frame) = dom.shared_info else { return };
    let (tsc, ns) = crate::time::now();
    let scale = crate::time::scale();
    let stable = if crate::arch::x86::cpu::invariant_tsc() {
        PVCLOCK_TSC_STABLE
    } else {
        0
    };
    let t = |version| VcpuTimeInfo {
        version,
        pad0: 0,
        tsc_timestamp: tsc,
        system_time: ns,
        tsc_to_system_mul: scale.mul,
        tsc_shift: scale.shift,
        flags: stable,
        pad1: [0; 2],
    };
    let time_off = offset_of!(VcpuInfo, time);
    let slot0 = offset_of!(SharedInfo, vcpu_info) + time_off;
    let mut v = [0u8; 4];
    frame_read(frame, slot0, &mut v);
    let odd = u32::from_le_bytes(v) | 1;
    frame_write(frame, slot0, &odd.to_le_bytes());
    frame_write(frame, slot0, t(odd).as_bytes());
    frame_write(frame, slot0, &(odd + 1).to_le_bytes());
    if dom.xen_vcpu.vcpu_info_gpa.is_some() {
        vcpu_info_read(dom, time_off, &mut v);
        let odd = u32::from_le_bytes(v) | 1;
        vcpu_info_write(dom, time_off, &odd.to_le_bytes());
        vcpu_info_write(dom, time_off, t(odd).as_bytes());
        vcpu_info_write(dom, time_off, &(odd + 1).to_le_bytes());
    }
}

/// Publishes the wallclock: the UTC time at which system time was 0.
pub fn update_wallclock<B: Backend>(dom: &Domain<B>) {
    let Some(frame) = dom.shared_info else { return };
    let boot_utc_ns = crate::time::boot_wallclock_ns();
    let (sec, nsec) = (
        boot_utc_ns / 1_000_000_000,
        (boot_utc_ns % 1_000_000_000) as u32,
    );
    let ver = offset_of!(SharedInfo, wc_version);
    let mut v = [0u8; 4];
    frame_read(frame, ver, &mut v);
    let odd = u32::from_le_bytes(v) | 1;
    frame_write(frame, ver, &odd.to_le_bytes());
    frame_write(
        frame,
        offset_of!(SharedInfo, wc_sec),
        &(sec as u32).to_le_bytes(),
    );
    frame_write(frame, offset_of!(SharedInfo, wc_nsec), &nsec.to_le_bytes());
    frame_write(
        frame,
        offset_of!(SharedInfo, wc_sec_hi),
        &((sec >> 32) as u32).to_le_bytes(),
    );
    frame_write(frame, ver, &(odd + 1).to_le_bytes());
}
