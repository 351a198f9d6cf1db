//! Turning a boot module into a loadable kernel ELF.
//!
//! A distribution kernel arrives as a bzImage whose payload is the ELF `vmlinux`
//! compressed with XZ and the x86 BCJ filter; it is decompressed into frames taken for the
//! purpose (freed once the domain is built). A plain ELF is used in place.

use crate::mm::phys::FrameBuf;
use core::fmt;
use pvh_loader::{parse_bzimage, BzImageError, Compression, ImageFormat};

/// LZMA2 dictionary reserved for decompression: Linux's `xz_wrap.sh` uses 32 MiB.
const XZ_DICT: u64 = 32 << 20;
/// Largest decompressed kernel accepted (Debian's 6.1 vmlinux is about 60 MiB).
const MAX_KERNEL: u64 = 512 << 20;

/// Why a module is not a usable kernel.
#[derive(Debug)]
pub enum KernelError {
    /// The module has no bytes.
    Empty,
    /// Neither an ELF nor a bzImage.
    UnknownFormat,
    /// A bzImage whose header is unusable (truncated, too old a boot protocol, ...).
    BzImage(BzImageError),
    /// A bzImage compressed with something other than XZ.
    Compression(Compression),
    /// The payload announces an impossible decompressed size.
    BadSize(u32),
    /// Not enough memory to decompress.
    OutOfMemory { bytes: u64 },
    /// The XZ payload is corrupt or truncated.
    Xz(pvh_loader::xz::XzError),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Empty => write!(f, "the kernel module is empty"),
            KernelError::UnknownFormat => {
                write!(f, "the kernel module is neither an ELF image nor a bzImage")
            }
            KernelError::BzImage(e) => write!(f, "bad bzImage: {e}"),
            KernelError::Compression(c) => write!(
                f,
                "bzImage payload is {c:?}-compressed; only XZ is supported"
            ),
            KernelError::BadSize(n) => {
                write!(f, "bzImage announces a decompressed size of {n} bytes")
            }
            KernelError::OutOfMemory { bytes } => write!(
                f,
                "not enough memory to decompress the kernel ({} MiB)",
                bytes >> 20
            ),
            KernelError::Xz(e) => write!(f, "bzImage payload: {e}"),
        }
    }
}

/// The kernel's ELF bytes: borrowed from the module, or decompressed into frames.
pub enum KernelElf<'a> {
    Borrowed(&'a [u8]),
    Owned { buf: FrameBuf, len: usize },
}

impl KernelElf<'_> {
    /// The ELF image.
    pub fn bytes(&self) -> &[u8] {
        match self {
            KernelElf::Borrowed(b) => b,
            KernelElf::Owned { buf, len } => &buf.as_slice()[..*len],
        }
    }
}

/// Finds the ELF in `module`, decompressing a bzImage's payload if needed.
pub fn extract(module: &[u8]) -> Result<KernelElf<'_>, KernelError> {
    if module.is_empty() {
        return Err(KernelError::Empty);
    }
    match ImageFormat::detect(module) {
        ImageFormat::Elf => Ok(KernelElf::Borrowed(module)),
        ImageFormat::BzImage => {
            let bz = parse_bzimage(module).map_err(KernelError::BzImage)?;
            if bz.compression != Compression::Xz {
                return Err(KernelError::Compression(bz.compression));
            }
            let size = bz.uncompressed_size_hint().ok_or(KernelError::BadSize(0))?;
            if size == 0 || u64::from(size) > MAX_KERNEL {
                return Err(KernelError::BadSize(size));
            }
            let mut dict =
                FrameBuf::new(XZ_DICT).ok_or(KernelError::OutOfMemory { bytes: XZ_DICT })?;
            let mut out = FrameBuf::new(u64::from(size)).ok_or(KernelError::OutOfMemory {
                bytes: u64::from(size),
            })?;
            let len =
                pvh_loader::xz::decompress(bz.payload, dict.as_mut_slice(), out.as_mut_slice())
                    .map_err(KernelError::Xz)?;
            Ok(KernelElf::Owned { buf: out, len })
        }
        ImageFormat::Unknown => Err(KernelError::UnknownFormat),
    }
}
