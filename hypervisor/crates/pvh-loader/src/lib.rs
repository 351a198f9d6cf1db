//! Host-testable parsing of PVH guest kernel images.
//!
//! * [`parse_pvh`] parses an ELF64 or ELF32 image (a Linux `vmlinux`, or a test guest):
//!   its `PT_LOAD` segments and the Xen ELF notes (owner `"Xen"`) of its `PT_NOTE` segments.
//!   It requires `XEN_ELFNOTE_PHYS32_ENTRY`, which makes the image a PVH kernel.
//! * [`load_segments`] hands each segment to a caller-supplied copier, which writes guest
//!   memory through the hypervisor's own checked accessor and zero-fills the BSS tail.
//! * [`parse_bzimage`] recognises a Linux bzImage and slices out its compressed payload
//!   and [`xz::decompress`] decompresses an XZ payload into caller-provided buffers.
//!
//! Every offset and size read from an image is checked: a hostile image yields an error,
//! never a panic or an arithmetic overflow. Nothing here allocates.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bzimage;
mod elf;
mod fixed;
pub mod xz;

#[cfg(test)]
mod testutil;

pub use bzimage::{parse_bzimage, BzImage, BzImageError, Compression};
pub use elf::{
    load_segments, parse_pvh, ElfClass, LoadError, PvhImage, Segment, XenNote, MAX_NOTES,
    MAX_SEGMENTS,
};
pub use fixed::FixedVec;

/// What kind of kernel image a byte buffer holds, by its magic numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// An ELF file (`\x7fELF`).
    Elf,
    /// A Linux bzImage (`"HdrS"` at 0x202).
    BzImage,
    /// Neither.
    Unknown,
}

impl ImageFormat {
    /// Detects the format of `image`.
    pub fn detect(image: &[u8]) -> Self {
        if image.starts_with(&elf::ELF_MAGIC) {
            Self::Elf
        } else if bzimage::has_setup_header(image) {
            Self::BzImage
        } else {
            Self::Unknown
        }
    }
}
