//! The shared_info page and vcpu_info: event flags, pvclock time, the wallclock.
//!
//! The hypervisor owns the shared_info frame; the guest maps it with `add_to_physmap`.
//! vCPU N's `vcpu_info` starts in shared_info's slot N (for N < 32, Xen's legacy limit;
//! higher vCPUs have none until they register one) and may move into guest RAM
//! (`VCPUOP_register_vcpu_info`). Time is published in both places: Linux reads the TSC
//! frequency from slot 0 even after moving its vcpu_info.
//!
//! Every function here works on a domain whose lock the caller holds (`&DomState`).
#![allow(unsafe_code)]

use crate::domain::memory::GuestMemory;
use crate::domain::{DomState, Domain};
use crate::hvm::Backend;
use crate::mm::phys;
use core::mem::offset_of;
use xen_abi::xen::{SharedInfo, VcpuInfo, VcpuTimeInfo};
use zerocopy::IntoBytes;

const VCPU_INFO_SIZE: usize = core::mem::size_of::<VcpuInfo>();
/// `vcpu_time_info.flags` bit 0: the TSC is stable and synchronised.
const PVCLOCK_TSC_STABLE: u8 = 1;

/// Legacy vcpu_info slots in shared_info (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_VCPUS: u32 = 32;

/// The domain's shared_info frame, allocated (zeroed, time and wallclock filled in) on
/// first use.
pub fn frame<B: Backend>(dom: &Domain<B>) -> Option<u64> {
    let mut st = dom.st.lock();
    if st.shared_info.is_none() {
        st.shared_info = Some(phys::alloc_zeroed(1, 1)?);
        for v in 0..dom.vcpus.len() as u32 {
            update_time(&dom.mem, &st, v);
        }
        update_wallclock(&st);
    }
    st.shared_info
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

/// Offset of vCPU `vcpu`'s legacy slot in shared_info, if it has one.
pub fn legacy_slot(vcpu: u32) -> Option<usize> {
    (vcpu < LEGACY_VCPUS)
        .then(|| offset_of!(SharedInfo, vcpu_info) + vcpu as usize * VCPU_INFO_SIZE)
}

/// Where vCPU `vcpu`'s vcpu_info lives now.
enum Place {
    Guest(u64),
    Shared(u64, usize),
    Nowhere,
}

fn place(st: &DomState, vcpu: u32) -> Place {
    match (
        st.vcpu_info.get(vcpu as usize).copied().flatten(),
        st.shared_info,
        legacy_slot(vcpu),
    ) {
        (Some(gpa), _, _) => Place::Guest(gpa),
        (None, Some(frame), Some(slot)) => Place::Shared(frame, slot),
        _ => Place::Nowhere,
    }
}

/// Reads bytes of vCPU `vcpu`'s vcpu_info, wherever it lives; zeros if it does not exist.
fn vcpu_info_read<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    st: &DomState,
    vcpu: u32,
    off: usize,
    out: &mut [u8],
) {
    match place(st, vcpu) {
        Place::Guest(gpa) => {
            if mem.read(gpa + off as u64, out).is_err() {
                out.fill(0);
            }
        }
        Place::Shared(frame, slot) => frame_read(frame, slot + off, out),
        Place::Nowhere => out.fill(0),
    }
}

/// A copy of vCPU `vcpu`'s current vcpu_info.
pub fn read_vcpu_info<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    st: &DomState,
    vcpu: u32,
) -> [u8; VCPU_INFO_SIZE] {
    let mut v = [0u8; VCPU_INFO_SIZE];
    vcpu_info_read(mem, st, vcpu, 0, &mut v);
    v
}

/// Whether vCPU `vcpu` has `evtchn_upcall_pending` set.
pub fn upcall_pending<F: pagetable::Format>(
    mem: &GuestMemory<F>,
    st: &DomState,
    vcpu: u32,
) -> bool {
    let mut b = [0u8; 1];
    vcpu_info_read(
        mem,
        st,
        vcpu,
        offset_of!(VcpuInfo, evtchn_upcall_pending),
        &mut b,
    );
    b[0] != 0
}

/// Publishes the current system time in vCPU `vcpu`'s pvclock (in its shared_info slot
/// and in its registered vcpu_info), with the version protocol (odd while updating) so
/// that the guest never uses a torn record.
pub fn update_time<F: pagetable::Format>(mem: &GuestMemory<F>, st: &DomState, vcpu: u32) {
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
    let mut v = [0u8; 4];
    if let (Some(frame), Some(slot)) = (st.shared_info, legacy_slot(vcpu)) {
        let at = slot + time_off;
        frame_read(frame, at, &mut v);
        let odd = u32::from_le_bytes(v) | 1;
        frame_write(frame, at, &odd.to_le_bytes());
        frame_write(frame, at, t(odd).as_bytes());
        frame_write(frame, at, &odd.wrapping_add(1).to_le_bytes());
    }
    if let Some(Some(gpa)) = st.vcpu_info.get(vcpu as usize) {
        let at = gpa + time_off as u64;
        if mem.read(at, &mut v).is_ok() {
            let odd = u32::from_le_bytes(v) | 1;
            let _ = mem.write(at, &odd.to_le_bytes());
            let _ = mem.write(at, t(odd).as_bytes());
            let _ = mem.write(at, &odd.wrapping_add(1).to_le_bytes());
        }
    }
}

/// Publishes the wallclock: the UTC time at which system time was 0.
pub fn update_wallclock(st: &DomState) {
    let Some(frame) = st.shared_info else { return };
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
    frame_write(frame, ver, &odd.wrapping_add(1).to_le_bytes());
}
