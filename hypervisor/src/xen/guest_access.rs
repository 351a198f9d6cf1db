//! Copying hypercall arguments to and from guest virtual addresses.
//!
//! Hypercall pointers are guest linear addresses: each page is translated through the
//! guest's own page tables ([`crate::domain::walk`]) and then through the p2m
//! ([`crate::domain::memory::GuestMemory`]). Any untranslatable byte makes the whole copy
//! fail with `-EFAULT`, as on Xen.

use super::Cx;
use crate::hvm::{Backend, Vcpu};
use guest_walk::{translate, PagingMode};
use xen_abi::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const PAGE: u64 = 4096;

fn paging_mode<B: Backend>(cx: &Cx<'_, B>) -> PagingMode {
    let s = cx.v.hw.control_state();
    PagingMode {
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
    }
}

/// Calls `f(gpa, offset, len)` for each page-sized piece of `[gva, gva + len)`.
fn for_each_piece<B: Backend>(
    cx: &Cx<'_, B>,
    gva: u64,
    len: usize,
    mut f: impl FnMut(u64, usize, usize) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let mode = paging_mode(cx);
    let mut done = 0usize;
    while done < len {
        let va = gva.checked_add(done as u64).ok_or(Errno::EFAULT)?;
        let n = ((PAGE - (va % PAGE)) as usize).min(len - done);
        let gpa = translate(&mode, va, &cx.dom.mem).ok_or(Errno::EFAULT)?;
        f(gpa, done, n)?;
        done += n;
    }
    Ok(())
}

/// Copies `buf.len()` bytes from guest virtual address `gva`.
pub fn copy_from_guest<B: Backend>(cx: &Cx<'_, B>, gva: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let len = buf.len();
    for_each_piece(cx, gva, len, |gpa, off, n| {
        cx.dom
            .mem
            .read(gpa, &mut buf[off..off + n])
            .map_err(|_| Errno::EFAULT)
    })
}

/// Copies `data` to guest virtual address `gva`. Checks the whole range first so that a
/// failing copy writes nothing.
pub fn copy_to_guest<B: Backend>(cx: &Cx<'_, B>, gva: u64, data: &[u8]) -> Result<(), Errno> {
    for_each_piece(cx, gva, data.len(), |gpa, _, n| {
        cx.dom.mem.check(gpa, n, true).map_err(|_| Errno::EFAULT)
    })?;
    for_each_piece(cx, gva, data.len(), |gpa, off, n| {
        cx.dom
            .mem
            .write(gpa, &data[off..off + n])
            .map_err(|_| Errno::EFAULT)
    })
}

/// Reads a plain `#[repr(C)]` argument structure.
pub fn read_arg<T: FromBytes + IntoBytes, B: Backend>(
    cx: &Cx<'_, B>,
    gva: u64,
) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(cx, gva, v.as_mut_bytes())?;
    Ok(v)
}

/// Writes a plain `#[repr(C)]` result structure.
pub fn write_arg<T: IntoBytes + Immutable, B: Backend>(
    cx: &Cx<'_, B>,
    gva: u64,
    v: &T,
) -> Result<(), Errno> {
    copy_to_guest(cx, gva, v.as_bytes())
}
