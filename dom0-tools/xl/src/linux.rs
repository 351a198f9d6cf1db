//! The Linux ioctls device hotplug needs: loop devices (`linux/loop.h`) and network
//! interfaces and bridges (`linux/sockios.h`, `linux/if.h`). All of xl's device-related
//! unsafe code is here; each call passes a kernel-defined structure by pointer.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_STATUS64: u64 = 0x4C04;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;

const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCSIFFLAGS: u64 = 0x8914;
const SIOCSIFMTU: u64 = 0x8922;
const SIOCSIFNAME: u64 = 0x8923;
const SIOCBRADDIF: u64 = 0x89a2;
const SIOCBRDELIF: u64 = 0x89a3;
const IFF_UP: i16 = 1;
const IFNAMSIZ: usize = 16;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct ifreq`: the name, then a 24-byte union (flags, mtu, ifindex, newname).
#[repr(C, align(8))]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// LOOP_CTL_GET_FREE on `/dev/loop-control`: the number of a free loop device (the
/// kernel creates it if needed).
pub fn loop_get_free(control: &File) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the descriptor is open.
    let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) })?;
    Ok(n as u32)
}

/// LOOP_SET_FD: binds `backing` to the loop device (read-only when either descriptor is).
pub fn loop_set_fd(dev: &File, backing: &File) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes a descriptor number by value; both are open.
    check(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_FD as _,
            backing.as_raw_fd() as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// LOOP_SET_STATUS64 with the backing file's name (shown by `losetup`) and no flags:
/// no autoclear, xl detaches explicitly.
pub fn loop_set_status(dev: &File, file_name: &str) -> io::Result<()> {
    let mut info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset: 0,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: 0,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    let n = file_name.len().min(63);
    info.file_name[..n].copy_from_slice(&file_name.as_bytes()[..n]);
    // SAFETY: `info` is a valid loop_info64 the kernel only reads.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info) })?;
    Ok(())
}

/// LOOP_CLR_FD: unbinds the backing file (deferred by the kernel while the device is
/// still open elsewhere).
pub fn loop_clr_fd(dev: &File) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is open.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) })?;
    Ok(())
}

/// Opens a loop device node (read-only for a read-only binding).
pub fn open_loop(path: &str, read_only: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(!read_only).open(path)
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name `{name}`"),
        ));
    }
    let mut r = IfReq {
        name: [0; IFNAMSIZ],
        data: [0; 24],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory arguments.
    let fd =
        check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn if_ioctl(req: u64, r: &mut IfReq) -> io::Result<()> {
    let s = control_socket()?;
    // SAFETY: `r` is a valid, writable ifreq for the duration of the call; every request
    // used here reads or writes only the name and the first bytes of the union.
    check(unsafe { libc::ioctl(s.as_raw_fd(), req as _, r as *mut IfReq) })?;
    Ok(())
}

/// Sets IFF_UP on an interface.
pub fn set_up(name: &str) -> io::Result<()> {
    let mut r = ifreq(name)?;
    if_ioctl(SIOCGIFFLAGS, &mut r)?;
    let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | IFF_UP;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    if_ioctl(SIOCSIFFLAGS, &mut r)
}

/// Sets an interface's MTU.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mut r = ifreq(name)?;
    let mtu = i32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    r.data[..4].copy_from_slice(&mtu.to_ne_bytes());
    if_ioctl(SIOCSIFMTU, &mut r)
}

/// Renames a (down) interface.
pub fn rename(from: &str, to: &str) -> io::Result<()> {
    let mut r = ifreq(from)?;
    let new = ifreq(to)?;
    r.data[..IFNAMSIZ].copy_from_slice(&new.name);
    if_ioctl(SIOCSIFNAME, &mut r)
}

/// Adds (or removes) the interface with index `ifindex` to the bridge `bridge`.
pub fn bridge_if(bridge: &str, ifindex: i32, add: bool) -> io::Result<()> {
    let mut r = ifreq(bridge)?;
    r.data[..4].copy_from_slice(&ifindex.to_ne_bytes());
    if_ioctl(if add { SIOCBRADDIF } else { SIOCBRDELIF }, &mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert!(ifreq("0123456789abcdef").is_err());
        assert!(ifreq("").is_err());
        assert_eq!(&ifreq("xenbr0").unwrap().name[..7], b"xenbr0\0");
    }
}
