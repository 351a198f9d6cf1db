//! Rust mirror of the Xen public guest ABI (`xen/include/public`) as far as ferrovisor needs
//! it to run unmodified Linux as a PVH dom0/domU.
//!
//! # Conventions
//!
//! * One module per public header. Each module's documentation names its source header and
//!   the interface version it mirrors ([`XEN_INTERFACE_VERSION`] unless stated otherwise).
//! * Constants keep the Xen name, upper-cased, with leading underscores dropped:
//!   `__HYPERVISOR_memory_op` becomes [`xen::HYPERVISOR_MEMORY_OP`], `XENMEM_add_to_physmap`
//!   becomes [`memory::XENMEM_ADD_TO_PHYSMAP`].
//! * Structs are the C tag in `CamelCase` (`struct evtchn_bind_virq` becomes
//!   [`event_channel::EvtchnBindVirq`]). They are `#[repr(C)]` with the x86_64 layout, carry
//!   explicit padding fields (named `_pad*`) so that no implicit padding exists, and derive the
//!   zerocopy traits so the hypervisor can copy them to and from guest memory without `unsafe`.
//!   Every struct has compile-time `size_of`/`align_of`/`offset_of!` assertions.
//! * C unions are laid out as plain bytes or integers with typed accessors.
//! * Guest pointers are [`GuestHandle<T>`]: a 64-bit guest address, never a host pointer.
//! * Field docs say **IN** (guest to hypervisor), **OUT** (hypervisor to guest) or **IN/OUT**.
//!
//! # Features
//!
//! * `tools` (off by default): reserved for toolstack-only interfaces (`domctl`, `sysctl`),
//!   which have their own interface version numbers. Nothing is behind it yet.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Compile-time layout check: size, alignment and field offsets of a `#[repr(C)]` type.
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr, align = $align:expr $(, $field:ident @ $off:expr)* $(,)?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$ty>() == $size, "size mismatch");
            assert!(::core::mem::align_of::<$ty>() == $align, "alignment mismatch");
            $( assert!(::core::mem::offset_of!($ty, $field) == $off, "offset mismatch"); )*
        };
    };
}

/// Declares a `#[repr(C)]` ABI struct deriving the usual traits and the zerocopy traits.
macro_rules! zc_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq,
            ::zerocopy::FromBytes, ::zerocopy::IntoBytes, ::zerocopy::Immutable,
            ::zerocopy::KnownLayout,
        )]
        pub struct $name { $($body)* }
    };
}

pub mod arch_x86;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod features;
pub mod fvctl;
pub mod grant_table;
mod guest_handle;
pub mod hvm;
pub mod io;
pub mod memory;
pub mod platform;
pub mod sched;
pub mod vcpu;
pub mod version;
pub mod xen;

pub use errno::Errno;
pub use guest_handle::GuestHandle;

/// Guest interface version this crate mirrors (`__XEN_INTERFACE_VERSION__`, Xen 4.13).
///
/// Every layout in this crate is the same for all interface versions from 0x00040700 up to
/// the latest (0x00041300 at the time of writing); the value matters only for the few
/// version-conditional definitions in the headers, and for documentation.
pub const XEN_INTERFACE_VERSION: u32 = 0x0004_0d00;

/// Latest interface version of the Xen snapshot the constants were checked against
/// (`__XEN_LATEST_INTERFACE_VERSION__` in `xen/include/public/xen-compat.h`).
pub const XEN_LATEST_INTERFACE_VERSION: u32 = 0x0004_1300;

/// `domid_t`: a domain id.
pub type DomId = u16;
/// `evtchn_port_t`: an event-channel port number.
pub type EvtchnPort = u32;
/// `grant_ref_t`: an index into a grant table.
pub type GrantRef = u32;
/// `grant_handle_t`: a maptrack handle returned by a grant map.
pub type GrantHandle = u32;
/// `xen_pfn_t` on x86_64: a frame number (a GFN for auto-translated guests).
pub type XenPfn = u64;
/// `xen_ulong_t` on x86_64.
pub type XenUlong = u64;

/// Size of a Xen page on x86 (4 KiB).
pub const XEN_PAGE_SIZE: usize = 4096;
/// log2 of [`XEN_PAGE_SIZE`].
pub const XEN_PAGE_SHIFT: u32 = 12;
