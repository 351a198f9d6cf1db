//! Memory management: physical frames, the direct map, the hypervisor's page tables, the heap.
//!
//! `frame` is plain Rust and host-tested; the rest touches real memory and exists only in
//! the bare-metal build.

#[cfg(target_os = "none")]
pub mod dom0ram;
pub mod e820;
pub mod frame;
pub mod frametable;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod phys;
