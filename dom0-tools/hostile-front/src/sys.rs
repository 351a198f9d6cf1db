//! `/dev/xen/gntalloc` (Linux `include/uapi/xen/gntalloc.h`, `drivers/xen/gntalloc.c`):
//! pages of this domain granted to another one, mapped into this process. The only
//! module of the crate with `unsafe` code: the two ioctls, mmap/munmap, and volatile
//! access to the mapped page (which the backend reads and writes concurrently).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use hostile_front::layout::PAGE_SIZE;

/// `_IOC(_IOC_NONE, 'G', 5, sizeof(struct ioctl_gntalloc_alloc_gref))`, the struct being
/// `{u16 domid; u16 flags; u32 count; u64 index; u32 gref_ids[1]}` (24 bytes).
const IOCTL_GNTALLOC_ALLOC_GREF: u64 = 0x0018_4705;
/// `_IOC(_IOC_NONE, 'G', 6, sizeof(struct ioctl_gntalloc_dealloc_gref))`, the struct
/// being `{u64 index; u32 count}` (16 bytes).
const IOCTL_GNTALLOC_DEALLOC_GREF: u64 = 0x0010_4706;
const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_alloc_gref` for one page.
#[repr(C)]
struct AllocGref {
    domid: u16,
    flags: u16,
    count: u32,
    index: u64,
    gref: u32,
    _pad: u32,
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
struct DeallocGref {
    index: u64,
    count: u32,
    _pad: u32,
}

fn ioctl<T>(fd: RawFd, nr: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` struct laid out as the
    // kernel's for `nr` and at least as large as the size `nr` encodes; the kernel reads
    // and writes only within that size and validates everything else.
    let r = unsafe { libc::ioctl(fd, nr as _, std::ptr::from_mut(arg).cast::<libc::c_void>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An open `/dev/xen/gntalloc`. Grants live as long as the file is open and their
/// pages are mapped.
#[derive(Clone)]
pub struct Gntalloc {
    file: Arc<File>,
}

impl Gntalloc {
    pub fn open() -> io::Result<Gntalloc> {
        let path = "/dev/xen/gntalloc";
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        Ok(Gntalloc {
            file: Arc::new(file),
        })
    }

    /// A fresh zeroed page granted to `domid` (writable by it if `writable`), mapped here.
    pub fn grant_page(&self, domid: u16, writable: bool) -> io::Result<GrantedPage> {
        let fd = self.file.as_raw_fd();
        let mut a = AllocGref {
            domid,
            flags: if writable { GNTALLOC_FLAG_WRITABLE } else { 0 },
            count: 1,
            index: 0,
            gref: 0,
            _pad: 0,
        };
        ioctl(fd, IOCTL_GNTALLOC_ALLOC_GREF, &mut a)
            .map_err(|e| io::Error::new(e.kind(), format!("gntalloc: alloc_gref: {e}")))?;
        let index = a.index;
        let Ok(offset) = libc::off_t::try_from(index) else {
            let _ = dealloc(fd, index);
            return Err(io::Error::other("gntalloc: index does not fit off_t"));
        };
        // SAFETY: a fresh shared mapping at an address the kernel chooses, of the page
        // gntalloc just allocated at `offset`; nothing in this process refers to it yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            let _ = dealloc(fd, index);
            return Err(io::Error::new(e.kind(), format!("gntalloc: mmap: {e}")));
        }
        Ok(GrantedPage {
            file: self.file.clone(),
            index,
            gref: a.gref,
            ptr: p.cast(),
            live: true,
        })
    }
}

fn dealloc(fd: RawFd, index: u64) -> io::Result<()> {
    let mut d = DeallocGref {
        index,
        count: 1,
        _pad: 0,
    };
    ioctl(fd, IOCTL_GNTALLOC_DEALLOC_GREF, &mut d)
}

/// One granted page mapped in this process. Every access is volatile: the other domain
/// changes the page at any time. Dropping it (or [`GrantedPage::revoke`]) unmaps it and
/// deallocates the grant; gntalloc ends foreign access once nobody maps it, deferring
/// that while the grantee still does.
pub struct GrantedPage {
    file: Arc<File>,
    index: u64,
    gref: u32,
    ptr: *mut u8,
    live: bool,
}

impl GrantedPage {
    /// The grant reference to hand to the other domain.
    pub fn gref(&self) -> u32 {
        self.gref
    }

    fn check(&self, off: usize, len: usize) {
        assert!(self.live, "granted page used after revoke");
        assert!(
            off.checked_add(len).is_some_and(|end| end <= PAGE_SIZE),
            "access of {len} bytes at {off} outside the page"
        );
    }

    pub fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `off + i < PAGE_SIZE` (checked above) and the page stays mapped
            // while `self.live`; volatile because another domain shares the memory.
            unsafe { self.ptr.add(off + i).write_volatile(*b) };
        }
    }

    pub fn read(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: as in `write`.
            *b = unsafe { self.ptr.add(off + i).read_volatile() };
        }
    }

    /// A ring index: one aligned 32-bit access, as the other side's C code does.
    pub fn write_u32(&self, off: usize, v: u32) {
        self.check(off, 4);
        assert_eq!(off % 4, 0, "unaligned ring index at {off}");
        // SAFETY: in bounds (checked), 4-aligned (the mapping is page-aligned), mapped
        // while `self.live`; volatile because another domain shares the memory.
        unsafe { self.ptr.add(off).cast::<u32>().write_volatile(v.to_le()) };
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        assert_eq!(off % 4, 0, "unaligned ring index at {off}");
        // SAFETY: as in `write_u32`.
        u32::from_le(unsafe { self.ptr.add(off).cast::<u32>().read_volatile() })
    }

    /// Unmaps the page and deallocates the grant now, whatever the grantee is doing
    /// with it (the hostile "revoke in flight").
    pub fn revoke(mut self) -> io::Result<()> {
        self.release()
    }

    fn release(&mut self) -> io::Result<()> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        // SAFETY: `ptr` is the page mapping this value created; `live` is now false, so
        // no access goes through it again.
        let r = unsafe { libc::munmap(self.ptr.cast(), PAGE_SIZE) };
        let unmapped = if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        dealloc(self.file.as_raw_fd(), self.index)?;
        unmapped
    }
}

impl Drop for GrantedPage {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(_IOC_NONE, type, nr, size)` as Linux encodes it on x86.
    const fn ioc_none(ty: u8, nr: u8, size: usize) -> u64 {
        ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
    }

    #[test]
    fn ioctl_numbers_and_structs_match_gntalloc_h() {
        assert_eq!(std::mem::size_of::<AllocGref>(), 24);
        assert_eq!(std::mem::offset_of!(AllocGref, index), 8);
        assert_eq!(std::mem::offset_of!(AllocGref, gref), 16);
        assert_eq!(std::mem::size_of::<DeallocGref>(), 16);
        assert_eq!(
            IOCTL_GNTALLOC_ALLOC_GREF,
            ioc_none(b'G', 5, std::mem::size_of::<AllocGref>())
        );
        assert_eq!(
            IOCTL_GNTALLOC_DEALLOC_GREF,
            ioc_none(b'G', 6, std::mem::size_of::<DeallocGref>())
        );
    }
}
