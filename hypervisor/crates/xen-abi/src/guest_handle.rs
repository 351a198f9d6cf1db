//! `XEN_GUEST_HANDLE(T)` on x86_64: a 64-bit guest (linear) address of a `T` or an array of
//! `T`. Source: `xen/include/public/arch-x86/xen.h` (`___DEFINE_XEN_GUEST_HANDLE`).

use core::fmt;
use core::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A guest address of a `T` (or of the first element of an array of `T`).
///
/// This is only a number: it is never dereferenced on the host. The hypervisor translates it
/// through the guest's page tables and copies through its own checked guest-memory accessor.
/// For PV-style `void` handles use `GuestHandle<u8>`.
#[repr(transparent)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GuestHandle<T> {
    addr: u64,
    _ty: PhantomData<T>,
}

impl<T> GuestHandle<T> {
    /// The null handle.
    pub const NULL: Self = Self::new(0);

    /// A handle for guest address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self {
            addr,
            _ty: PhantomData,
        }
    }

    /// The raw guest address.
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// Whether the handle is null (Xen treats a null handle as "no buffer" in several ops).
    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// Guest address of element `index`, or `None` on overflow.
    pub const fn element_addr(self, index: u64) -> Option<u64> {
        match index.checked_mul(core::mem::size_of::<T>() as u64) {
            Some(off) => self.addr.checked_add(off),
            None => None,
        }
    }

    /// The same address viewed as a handle to another type.
    pub const fn cast<U>(self) -> GuestHandle<U> {
        GuestHandle::new(self.addr)
    }
}

impl<T> Clone for GuestHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for GuestHandle<T> {}
impl<T> PartialEq for GuestHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}
impl<T> Eq for GuestHandle<T> {}
impl<T> Default for GuestHandle<T> {
    fn default() -> Self {
        Self::NULL
    }
}
impl<T> fmt::Debug for GuestHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x})", self.addr)
    }
}

assert_layout!(GuestHandle<u64>, size = 8, align = 8);
assert_layout!(GuestHandle<[u8; 3]>, size = 8, align = 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_addresses_are_checked() {
        let h = GuestHandle::<u64>::new(0x1000);
        assert_eq!(h.element_addr(3), Some(0x1018));
        assert_eq!(GuestHandle::<u64>::new(u64::MAX).element_addr(1), None);
        assert_eq!(h.element_addr(u64::MAX), None);
        assert!(GuestHandle::<u8>::NULL.is_null());
        assert_eq!(h.cast::<u32>().addr(), 0x1000);
    }

    #[test]
    fn handle_is_a_little_endian_u64() {
        let h = GuestHandle::<u32>::new(0x1122_3344_5566_7788);
        assert_eq!(h.as_bytes(), &0x1122_3344_5566_7788u64.to_le_bytes());
        let back = GuestHandle::<u32>::read_from_bytes(h.as_bytes()).unwrap();
        assert_eq!(back, h);
    }
}
