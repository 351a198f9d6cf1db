//! The system calls behind the devices: ioctl, read/write on device fds, and the memory
//! mappings shared with the kernel, the hypervisor or other domains. Every `unsafe` of
//! the crate is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

fn check(r: libc::c_long) -> io::Result<i64> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ioctl(fd, nr, arg)`; returns the non-negative result.
pub fn ioctl(fd: RawFd, nr: u64, arg: *mut libc::c_void) -> io::Result<i64> {
    // SAFETY: `arg` points to a buffer of the size the ioctl number encodes (the callers
    // pass arrays laid out as the kernel's structs) or is null for argument-less ioctls;
    // the kernel validates `fd` and `nr`.
    let r = unsafe { libc::ioctl(fd, nr as _, arg) };
    check(libc::c_long::from(r))
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(r as libc::c_long).map(|n| n as usize)
}

pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reads.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// `IOCTL_PRIVCMD_HYPERCALL`: the hypercall's return value, or its negative errno as an error.
pub fn privcmd_hypercall(fd: RawFd, op: u64, args: [u64; 5]) -> io::Result<i64> {
    let mut call = [op, args[0], args[1], args[2], args[3], args[4]];
    ioctl(fd, crate::nr::PRIVCMD_HYPERCALL, call.as_mut_ptr().cast())
}

/// A shared mapping of `len` bytes of a device file, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; accesses through `ptr` are the owner's
// responsibility (volatile, with fences), and moving the handle between threads is fine.
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn new(fd: RawFd, offset: u64, len: usize, writable: bool) -> io::Result<Mapping> {
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping chosen by the kernel; nothing else in this
        // process refers to that range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is a mapping this value created and nothing uses after drop.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Memory the hypervisor may read and write on a hypercall's behalf: page-aligned,
/// locked in RAM and touched, so it is present while the hypercall runs. Taken from
/// `/dev/xen/hypercall` (kernel pages) when available, else anonymous memory with mlock.
pub struct HypercallBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: owned memory, accessed through `&self`/`&mut self` only.
unsafe impl Send for HypercallBuf {}

impl HypercallBuf {
    pub fn new(len: usize) -> io::Result<HypercallBuf> {
        let len = len.div_ceil(4096).max(1) * 4096;
        let dev = File::options()
            .read(true)
            .write(true)
            .open("/dev/xen/hypercall")
            .ok();
        let (fd, flags) = match &dev {
            Some(f) => (f.as_raw_fd(), libc::MAP_SHARED),
            None => (-1, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
        };
        // SAFETY: a fresh mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if dev.is_none() {
            // SAFETY: `p..p+len` is the mapping just created.
            if unsafe { libc::mlock(p, len) } != 0 {
                let e = io::Error::last_os_error();
                // SAFETY: as above; nothing refers to it yet.
                unsafe { libc::munmap(p, len) };
                return Err(e);
            }
        }
        // SAFETY: `p..p+len` is a fresh writable mapping; zeroing it also touches every page.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len) };
        Ok(HypercallBuf { ptr: p.cast(), len })
    }

    /// The address to pass to the hypervisor (this process's virtual address).
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped for the life of `self`; the hypervisor writes it
        // only during a hypercall, which needs `&self`/`&mut self` of its caller.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for HypercallBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping this value created; no references outlive `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A page another domain granted, mapped through gntdev; unmapped (and the grant
/// released) on drop.
pub struct GrantMap {
    map: Option<Mapping>,
    dev: Arc<File>,
    index: u64,
}

impl GrantMap {
    pub(crate) fn new(dev: Arc<File>, index: u64, writable: bool) -> io::Result<GrantMap> {
        match Mapping::new(dev.as_raw_fd(), index, 4096, writable) {
            Ok(m) => Ok(GrantMap {
                map: Some(m),
                dev,
                index,
            }),
            Err(e) => {
                unmap_grant(&dev, index);
                Err(e)
            }
        }
    }

    /// The page (4096 bytes). Access it with volatile operations: the granting domain
    /// changes it concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ref().map_or(std::ptr::null_mut(), Mapping::ptr)
    }
}

fn unmap_grant(dev: &File, index: u64) {
    // struct ioctl_gntdev_unmap_grant_ref: index, count, pad.
    let mut arg = [index, 1];
    let _ = ioctl(
        dev.as_raw_fd(),
        crate::nr::GNTDEV_UNMAP_GRANT_REF,
        arg.as_mut_ptr().cast(),
    );
}

impl Drop for GrantMap {
    fn drop(&mut self) {
        drop(self.map.take());
        unmap_grant(&self.dev, self.index);
    }
}
