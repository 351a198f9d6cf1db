//! Error numbers Xen returns to guests (negated, in RAX).
//!
//! Source: `xen/include/public/errno.h` (interface version 0x00040d00; the list is
//! version-independent). The values are Xen's own, which coincide with Linux's for every
//! entry here, so a Linux guest can interpret them directly.

use core::fmt;

macro_rules! errnos {
    ($( $(#[$m:meta])* $name:ident = $val:expr, )*) => {
        /// A Xen errno value (positive). Hypercalls return its negation; see
        /// [`Errno::to_ret`] and [`Errno::to_rax`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Errno {
            $( $(#[$m])* $name = $val, )*
        }

        impl Errno {
            /// Every errno defined by Xen, in header order (aliases excluded).
            pub const ALL: &'static [Errno] = &[$(Errno::$name,)*];

            /// The symbolic name, e.g. `"EINVAL"`.
            pub const fn name(self) -> &'static str {
                match self { $( Errno::$name => stringify!($name), )* }
            }

            /// The errno for a positive value, if Xen defines it.
            pub const fn from_raw(value: i32) -> Option<Errno> {
                match value { $( $val => Some(Errno::$name), )* _ => None }
            }
        }
    };
}

errnos! {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory.
    ENOENT = 2,
    /// No such process.
    ESRCH = 3,
    /// Interrupted system call.
    EINTR = 4,
    /// I/O error.
    EIO = 5,
    /// No such device or address.
    ENXIO = 6,
    /// Argument list too long.
    E2BIG = 7,
    /// Exec format error.
    ENOEXEC = 8,
    /// Bad file number.
    EBADF = 9,
    /// No child processes.
    ECHILD = 10,
    /// Try again (also `EWOULDBLOCK`).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address.
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// File exists.
    EEXIST = 17,
    /// Cross-device link.
    EXDEV = 18,
    /// No such device.
    ENODEV = 19,
    /// Not a directory.
    ENOTDIR = 20,
    /// Is a directory.
    EISDIR = 21,
    /// Invalid argument.
    EINVAL = 22,
    /// File table overflow.
    ENFILE = 23,
    /// Too many open files.
    EMFILE = 24,
    /// No space left on device.
    ENOSPC = 28,
    /// Read-only file system.
    EROFS = 30,
    /// Too many links.
    EMLINK = 31,
    /// Math argument out of domain.
    EDOM = 33,
    /// Result not representable.
    ERANGE = 34,
    /// Resource deadlock would occur (also `EDEADLOCK`).
    EDEADLK = 35,
    /// File name too long.
    ENAMETOOLONG = 36,
    /// No record locks available.
    ENOLCK = 37,
    /// Function not implemented (unknown hypercall or sub-op).
    ENOSYS = 38,
    /// Directory not empty.
    ENOTEMPTY = 39,
    /// No data available.
    ENODATA = 61,
    /// Timer expired (e.g. a `VCPU_SSHOTTMR_future` timeout already in the past).
    ETIME = 62,
    /// Not a data message.
    EBADMSG = 74,
    /// Value too large for defined data type.
    EOVERFLOW = 75,
    /// Illegal byte sequence.
    EILSEQ = 84,
    /// Interrupted call should be restarted.
    ERESTART = 85,
    /// Socket operation on non-socket.
    ENOTSOCK = 88,
    /// Message too large.
    EMSGSIZE = 90,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Address already in use.
    EADDRINUSE = 98,
    /// Cannot assign requested address.
    EADDRNOTAVAIL = 99,
    /// No buffer space available.
    ENOBUFS = 105,
    /// Transport endpoint is already connected.
    EISCONN = 106,
    /// Transport endpoint is not connected.
    ENOTCONN = 107,
    /// Connection timed out.
    ETIMEDOUT = 110,
    /// Connection refused.
    ECONNREFUSED = 111,
}

impl Errno {
    /// Alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// Alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// The positive errno value.
    pub const fn value(self) -> i32 {
        self as i32
    }

    /// The hypercall return value for this error: `-errno` as a signed long.
    pub const fn to_ret(self) -> i64 {
        -(self as i64)
    }

    /// The raw RAX value the guest sees: `-errno`, sign-extended to 64 bits.
    pub const fn to_rax(self) -> u64 {
        self.to_ret() as u64
    }

    /// Decodes a hypercall return value: `Some(errno)` for a negative value Xen defines.
    pub const fn from_ret(ret: i64) -> Option<Errno> {
        if ret < 0 && ret > i32::MIN as i64 {
            Errno::from_raw(-(ret as i32))
        } else {
            None
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.value())
    }
}

/// Encodes a hypercall result as the RAX value: `Ok(v)` is returned as is, `Err(e)` as
/// `-errno`.
pub const fn result_to_rax(result: Result<u64, Errno>) -> u64 {
    match result {
        Ok(v) => v,
        Err(e) => e.to_rax(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_xen_errno_h() {
        let expected: &[(Errno, i32)] = &[
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::ESRCH, 3),
            (Errno::EINTR, 4),
            (Errno::EIO, 5),
            (Errno::ENXIO, 6),
            (Errno::E2BIG, 7),
            (Errno::EAGAIN, 11),
            (Errno::ENOMEM, 12),
            (Errno::EACCES, 13),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::ENODEV, 19),
            (Errno::EINVAL, 22),
            (Errno::ENOSPC, 28),
            (Errno::ERANGE, 34),
            (Errno::ENOSYS, 38),
            (Errno::ETIME, 62),
            (Errno::EOPNOTSUPP, 95),
            (Errno::ECONNREFUSED, 111),
        ];
        for &(e, v) in expected {
            assert_eq!(e.value(), v, "{}", e.name());
        }
        assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
        assert_eq!(Errno::EDEADLOCK.value(), 35);
    }

    #[test]
    fn rax_encoding_is_negative_errno() {
        assert_eq!(Errno::ENOSYS.to_ret(), -38);
        assert_eq!(Errno::ENOSYS.to_rax(), 0xffff_ffff_ffff_ffda);
        assert_eq!(Errno::EPERM.to_rax(), u64::MAX);
        assert_eq!(result_to_rax(Ok(5)), 5);
        assert_eq!(result_to_rax(Err(Errno::EINVAL)), (-22i64) as u64);
    }

    #[test]
    fn round_trips() {
        for &e in Errno::ALL {
            assert_eq!(Errno::from_raw(e.value()), Some(e));
            assert_eq!(Errno::from_ret(e.to_ret()), Some(e));
        }
        assert_eq!(Errno::from_raw(15), None);
        assert_eq!(Errno::from_ret(0), None);
        assert_eq!(Errno::from_ret(22), None);
        assert_eq!(Errno::from_ret(i64::MIN), None);
        assert_eq!(Errno::ALL.len(), 49);
    }
}
