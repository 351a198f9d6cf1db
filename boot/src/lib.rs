//! Everything between the boot loader and the hypervisor's Rust entry point.
//!
//! * [`entry`] (bare metal only) holds the multiboot1 and multiboot2 headers and the 32-bit
//!   trampoline that enables long mode and calls `ferrovisor_main(magic, info)`.
//! * [`info`] turns either multiboot flavour into one plain [`info::BootInfo`]: memory map,
//!   modules, command line and loader name, copied out of the loader's structures so that the
//!   memory they occupy can be reused.
//! * `linker.ld` (next to this crate's manifest) lays the image out at 2 MiB as one contiguous
//!   segment, which is what QEMU's multiboot1 "a.out kludge" loader requires.
//!
//! The parsers are plain Rust reading through [`info::PhysRead`], so they run under host unit
//! tests on hand-built boot-information blocks.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
pub mod entry;
pub mod info;
mod mb1;
mod mb2;

pub use info::{BootInfo, BootInfoError, MemoryKind, MemoryRegion, Module, PhysRead};

/// Value in EAX when a multiboot1 loader (QEMU `-kernel`, GRUB `multiboot`) jumps to us.
pub const MULTIBOOT1_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Value in EAX when a multiboot2 loader (GRUB `multiboot2`) jumps to us.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
