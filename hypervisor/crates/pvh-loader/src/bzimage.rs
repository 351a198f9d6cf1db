//! Linux bzImage recognition: the x86 boot-protocol setup header and the compressed
//! payload it points to (Linux `Documentation/arch/x86/boot.rst`, `arch/x86/boot/header.S`).
//!
//! Only detection and slicing happen here; the payload (for Debian's 6.1 kernels an XZ
//! stream with the x86 BCJ filter) is decompressed elsewhere, and the result is then an ELF
//! `vmlinux` for [`crate::parse_pvh`].

use core::fmt;

const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_BOOT_FLAG: usize = 0x1fe;
const OFF_HEADER_MAGIC: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_XLOADFLAGS: usize = 0x236;
const OFF_PAYLOAD_OFFSET: usize = 0x248;
const OFF_PAYLOAD_LENGTH: usize = 0x24c;
const OFF_PREF_ADDRESS: usize = 0x258;
const OFF_INIT_SIZE: usize = 0x260;
/// End of the header fields read here.
const HEADER_END: usize = OFF_INIT_SIZE + 4;
const HEADER_MAGIC: [u8; 4] = *b"HdrS";
const BOOT_FLAG: u16 = 0xaa55;
/// First protocol version with `payload_offset`/`payload_length` (2.08).
const MIN_PROTOCOL: u16 = 0x0208;
/// First protocol version with `pref_address` and `init_size` (2.10).
const PROTOCOL_2_10: u16 = 0x020a;
const SECTOR: usize = 512;

/// Compression of a bzImage payload, recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`1F 8B`).
    Gzip,
    /// bzip2 (`"BZh"`).
    Bzip2,
    /// Legacy LZMA (`5D 00 00`).
    Lzma,
    /// XZ (`FD 37 7A 58 5A 00`).
    Xz,
    /// LZO (`89 4C 5A 4F`).
    Lzo,
    /// LZ4 legacy frame (`02 21 4C 18`).
    Lz4,
    /// Zstandard (`28 B5 2F FD`).
    Zstd,
    /// Unrecognised; the first bytes (zero-padded).
    Unknown([u8; 6]),
}

impl Compression {
    /// Identifies a compressed stream by its first bytes.
    pub fn detect(data: &[u8]) -> Self {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], Compression::Xz),
            (&[0x1f, 0x8b], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0x89, 0x4c, 0x5a, 0x4f], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        ];
        for &(magic, kind) in MAGICS {
            if data.starts_with(magic) {
                return kind;
            }
        }
        let mut head = [0u8; 6];
        for (d, s) in head.iter_mut().zip(data) {
            *d = *s;
        }
        Compression::Unknown(head)
    }
}

/// A recognised bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage<'a> {
    /// Number of 512-byte setup sectors (after applying "0 means 4").
    pub setup_sects: u8,
    /// Boot protocol version, e.g. 0x020F.
    pub protocol: u16,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// File offset of the protected-mode code: `(setup_sects + 1) * 512`.
    pub pm_offset: usize,
    /// `payload_offset`, relative to `pm_offset`.
    pub payload_offset: u32,
    /// The compressed payload (`payload_length` bytes). For XZ and gzip kernels its last four
    /// bytes are the little-endian uncompressed size.
    pub payload: &'a [u8],
    /// Compression of the payload.
    pub compression: Compression,
    /// `pref_address` (protocol ≥ 2.10).
    pub pref_address: Option<u64>,
    /// `init_size`: memory the decompressed kernel needs (protocol ≥ 2.10).
    pub init_size: Option<u32>,
}

impl BzImage<'_> {
    /// The last four payload bytes as a little-endian u32: the uncompressed size for kernels
    /// built with XZ or gzip (`scripts/Makefile.lib` appends it).
    pub fn uncompressed_size_hint(&self) -> Option<u32> {
        let len = self.payload.len();
        let tail = self.payload.get(len.checked_sub(4)?..)?;
        Some(u32::from_le_bytes(tail.try_into().ok()?))
    }
}

/// Why an image is not a usable bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// The file is too short for the setup header.
    TooShort {
        /// File length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// No `"HdrS"` magic at 0x202.
    NoSetupHeader {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The boot flag at 0x1FE is not 0xAA55.
    BadBootFlag {
        /// The value found.
        flag: u16,
    },
    /// The boot protocol predates `payload_offset` (2.08).
    ProtocolTooOld {
        /// The version found.
        version: u16,
    },
    /// The payload lies (partly) outside the file.
    PayloadOutOfFile {
        /// File offset of the payload start (saturated on overflow).
        start: u64,
        /// `payload_length`.
        length: u32,
        /// File length.
        file_len: usize,
    },
    /// `payload_length` is zero.
    EmptyPayload,
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len, needed } => {
                write!(
                    f,
                    "image is {len} bytes, too short for a bzImage setup header ({needed})"
                )
            }
            Self::NoSetupHeader { found } => {
                write!(
                    f,
                    "no \"HdrS\" setup header magic at 0x202 (found {found:02x?})"
                )
            }
            Self::BadBootFlag { flag } => {
                write!(f, "bzImage boot flag {flag:#06x}, expected 0xaa55")
            }
            Self::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} has no payload fields (need 2.08 or newer)",
                version >> 8,
                version & 0xff
            ),
            Self::PayloadOutOfFile {
                start,
                length,
                file_len,
            } => write!(
                f,
                "payload {start:#x}+{length:#x} lies outside the {file_len}-byte image"
            ),
            Self::EmptyPayload => write!(f, "bzImage payload is empty"),
        }
    }
}

fn rd<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// Whether `image` carries the `"HdrS"` setup-header magic.
pub(crate) fn has_setup_header(image: &[u8]) -> bool {
    rd::<4>(image, OFF_HEADER_MAGIC) == Some(HEADER_MAGIC)
}

/// Recognises a bzImage and slices out its compressed payload.
pub fn parse_bzimage(image: &[u8]) -> Result<BzImage<'_>, BzImageError> {
    let file_len = image.len();
    let short = BzImageError::TooShort {
        len: file_len,
        needed: HEADER_END,
    };
    let magic = rd::<4>(image, OFF_HEADER_MAGIC).ok_or(short)?;
    if magic != HEADER_MAGIC {
        return Err(BzImageError::NoSetupHeader { found: magic });
    }
    if file_len < HEADER_END {
        return Err(short);
    }
    let u16_at = |off| rd::<2>(image, off).map(u16::from_le_bytes).ok_or(short);
    let u32_at = |off| rd::<4>(image, off).map(u32::from_le_bytes).ok_or(short);

    let flag = u16_at(OFF_BOOT_FLAG)?;
    if flag != BOOT_FLAG {
        return Err(BzImageError::BadBootFlag { flag });
    }
    let protocol = u16_at(OFF_VERSION)?;
    if protocol < MIN_PROTOCOL {
        return Err(BzImageError::ProtocolTooOld { version: protocol });
    }
    let raw_sects = *image.get(OFF_SETUP_SECTS).ok_or(short)?;
    let setup_sects = if raw_sects == 0 { 4 } else { raw_sects };
    // At most 256 * 512: cannot overflow.
    let pm_offset = (usize::from(setup_sects) + 1) * SECTOR;
    let payload_offset = u32_at(OFF_PAYLOAD_OFFSET)?;
    let length = u32_at(OFF_PAYLOAD_LENGTH)?;
    if length == 0 {
        return Err(BzImageError::EmptyPayload);
    }
    let start = (pm_offset as u64).saturating_add(u64::from(payload_offset));
    let out = BzImageError::PayloadOutOfFile {
        start,
        length,
        file_len,
    };
    let start_us = pm_offset
        .checked_add(usize::try_from(payload_offset).map_err(|_| out)?)
        .ok_or(out)?;
    let end = start_us
        .checked_add(usize::try_from(length).map_err(|_| out)?)
        .ok_or(out)?;
    let payload = image.get(start_us..end).ok_or(out)?;

    let (pref_address, init_size) = if protocol >= PROTOCOL_2_10 {
        let pref = rd::<8>(image, OFF_PREF_ADDRESS)
            .map(u64::from_le_bytes)
            .ok_or(short)?;
        (Some(pref), Some(u32_at(OFF_INIT_SIZE)?))
    } else {
        (None, None)
    };

    Ok(BzImage {
        setup_sects,
        protocol,
        xloadflags: u16_at(OFF_XLOADFLAGS)?,
        pm_offset,
        payload_offset,
        payload,
        compression: Compression::detect(payload),
        pref_address,
        init_size,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;
    use std::vec::Vec;

    use super::*;
    use crate::ImageFormat;

    const XZ: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

    /// A synthetic bzImage: setup sectors, then protected-mode code whose payload is `payload`
    /// at `payload_offset` (Limg-like values by default).
    fn build(setup_sects: u8, protocol: u16, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let pm = (sects + 1) * 512;
        let total = pm + payload_offset as usize + payload.len() + 16;
        let mut img = std::vec![0u8; total];
        img[OFF_SETUP_SECTS] = setup_sects;
        img[OFF_BOOT_FLAG..OFF_BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        img[OFF_HEADER_MAGIC..OFF_HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        img[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&protocol.to_le_bytes());
        img[OFF_XLOADFLAGS..OFF_XLOADFLAGS + 2].copy_from_slice(&0x7fu16.to_le_bytes());
        img[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4]
            .copy_from_slice(&payload_offset.to_le_bytes());
        img[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img[OFF_PREF_ADDRESS..OFF_PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        img[OFF_INIT_SIZE..OFF_INIT_SIZE + 4].copy_from_slice(&0x3f9_7000u32.to_le_bytes());
        let p = pm + payload_offset as usize;
        img[p..p + payload.len()].copy_from_slice(payload);
        img
    }

    fn xz_payload() -> Vec<u8> {
        let mut p = XZ.to_vec();
        p.extend_from_slice(&[1, 2, 3, 4, 5]);
        p.extend_from_slice(&65_905_060u32.to_le_bytes());
        p
    }

    #[test]
    fn debian_like_xz_bzimage() {
        let payload = xz_payload();
        let img = build(39, 0x020f, 0x2cc, &payload);
        assert_eq!(ImageFormat::detect(&img), ImageFormat::BzImage);
        let bz = parse_bzimage(&img).unwrap();
        assert_eq!(bz.setup_sects, 39);
        assert_eq!(bz.pm_offset, 40 * 512);
        assert_eq!(bz.protocol, 0x020f);
        assert_eq!(bz.payload, &payload[..]);
        assert_eq!(bz.compression, Compression::Xz);
        assert_eq!(bz.pref_address, Some(0x100_0000));
        assert_eq!(bz.init_size, Some(0x3f9_7000));
        assert_eq!(bz.xloadflags, 0x7f);
        assert_eq!(bz.uncompressed_size_hint(), Some(65_905_060));
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let img = build(0, 0x020f, 0x10, &[0x1f, 0x8b, 8, 0]);
        let bz = parse_bzimage(&img).unwrap();
        assert_eq!(bz.setup_sects, 4);
        assert_eq!(bz.pm_offset, 5 * 512);
        assert_eq!(bz.compression, Compression::Gzip);
    }

    #[test]
    fn compression_magics() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 0x08], Compression::Gzip),
            (b"BZh91AY", Compression::Bzip2),
            (&[0x5d, 0, 0, 0x80], Compression::Lzma),
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00], Compression::Xz),
            (&[0x89, 0x4c, 0x5a, 0x4f, 0], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x04], Compression::Zstd),
            (
                &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01],
                Compression::Unknown([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01]),
            ),
            (&[0xaa], Compression::Unknown([0xaa, 0, 0, 0, 0, 0])),
        ];
        for &(data, want) in cases {
            assert_eq!(Compression::detect(data), want, "{data:02x?}");
            let img = build(4, 0x020f, 0, data);
            assert_eq!(parse_bzimage(&img).unwrap().compression, want);
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let payload = xz_payload();
        let good = build(39, 0x020f, 0x2cc, &payload);

        let mut img = good.clone();
        img[OFF_HEADER_MAGIC] = b'X';
        assert_eq!(
            parse_bzimage(&img),
            Err(BzImageError::NoSetupHeader { found: *b"XdrS" })
        );
        assert_eq!(ImageFormat::detect(&img), ImageFormat::Unknown);

        let mut img = good.clone();
        img[OFF_BOOT_FLAG] = 0;
        assert_eq!(
            parse_bzimage(&img),
            Err(BzImageError::BadBootFlag { flag: 0xaa00 })
        );

        let img = build(39, 0x0207, 0x2cc, &payload);
        let err = parse_bzimage(&img).unwrap_err();
        assert_eq!(err, BzImageError::ProtocolTooOld { version: 0x0207 });
        assert!(format!("{err}").contains("2.07"));

        let img = build(39, 0x0208, 0x2cc, &payload);
        let bz = parse_bzimage(&img).unwrap();
        assert_eq!((bz.pref_address, bz.init_size), (None, None));

        let mut img = good.clone();
        img[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_bzimage(&img), Err(BzImageError::EmptyPayload));
    }

    #[test]
    fn payload_outside_file() {
        let payload = xz_payload();
        let good = build(39, 0x020f, 0x2cc, &payload);
        let mut img = good.clone();
        img[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_bzimage(&img),
            Err(BzImageError::PayloadOutOfFile { .. })
        ));
        let mut img = good;
        img[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = parse_bzimage(&img).unwrap_err();
        assert_eq!(
            err,
            BzImageError::PayloadOutOfFile {
                start: 40 * 512 + u64::from(u32::MAX),
                length: payload.len() as u32,
                file_len: img.len()
            }
        );
    }

    #[test]
    fn every_prefix_is_handled() {
        let payload = xz_payload();
        let img = build(4, 0x020f, 0x20, &payload);
        let full = parse_bzimage(&img).unwrap();
        for cut in 0..img.len() {
            match parse_bzimage(&img[..cut]) {
                Ok(bz) => assert_eq!(bz.payload, full.payload),
                Err(e) => assert!(!format!("{e}").is_empty()),
            }
        }
        // Cutting into the payload must fail.
        let payload_end = full.pm_offset + 0x20 + payload.len();
        for cut in 0..payload_end {
            assert!(parse_bzimage(&img[..cut]).is_err(), "cut {cut}");
        }
    }
}
