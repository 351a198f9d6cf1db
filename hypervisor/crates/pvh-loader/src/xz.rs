//! XZ decompression of kernel payloads (Linux's bzImage ships its ELF as XZ with the x86
//! BCJ filter), with the `xz4rust` decoder.
//!
//! The caller provides both the dictionary and the output buffer, so this works without a
//! heap and with memory the hypervisor takes from its frame allocator.

use core::fmt;

/// Why a payload could not be decompressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XzError {
    /// The stream ended before its end marker: the image is truncated.
    Truncated {
        /// Compressed bytes read.
        consumed: usize,
        /// Bytes decompressed.
        produced: usize,
    },
    /// The output would exceed the buffer (the size hint was wrong or hostile).
    OutputTooSmall {
        /// Size of the output buffer.
        capacity: usize,
    },
    /// The decoder rejected the data (corruption, unsupported filter, dictionary too big).
    Corrupt(xz4rust::XzError),
}

impl fmt::Display for XzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XzError::Truncated { consumed, produced } => write!(
                f,
                "XZ stream truncated after {consumed} compressed bytes ({produced} bytes decompressed)"
            ),
            XzError::OutputTooSmall { capacity } => {
                write!(f, "XZ stream decompresses to more than the {capacity} bytes reserved for it")
            }
            XzError::Corrupt(e) => write!(f, "XZ stream is corrupt or unsupported: {e:?}"),
        }
    }
}

/// Decompresses the XZ stream at the start of `input` into `out`, using `dict` as the
/// LZMA2 dictionary (it must be at least as large as the stream's dictionary size; Linux
/// uses 32 MiB). Returns the number of bytes written. Data after the stream's end (Linux's
/// 4-byte size trailer) is ignored.
pub fn decompress(input: &[u8], dict: &mut [u8], out: &mut [u8]) -> Result<usize, XzError> {
    let mut decoder = xz4rust::XzDecoder::with_fixed_size_dict(dict);
    let (mut consumed, mut produced) = (0usize, 0usize);
    loop {
        let step = decoder
            .decode(&input[consumed..], &mut out[produced..])
            .map_err(XzError::Corrupt)?;
        consumed += step.input_consumed();
        produced += step.output_produced();
        if step.is_end_of_stream() {
            return Ok(produced);
        }
        if !step.made_progress() {
            return Err(if produced == out.len() {
                XzError::OutputTooSmall {
                    capacity: out.len(),
                }
            } else {
                XzError::Truncated { consumed, produced }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../tests/fixtures/sample.bin");
    /// `xz --check=crc32 --x86 --lzma2=dict=1MiB` of SAMPLE: the filter chain Linux uses.
    const SAMPLE_XZ: &[u8] = include_bytes!("../tests/fixtures/sample.bin.xz");

    fn buffers() -> (Vec<u8>, Vec<u8>) {
        (vec![0u8; 1 << 20], vec![0u8; SAMPLE.len() + 100])
    }

    #[test]
    fn decompresses_bcj_x86_stream() {
        let (mut dict, mut out) = buffers();
        let n = decompress(SAMPLE_XZ, &mut dict, &mut out).unwrap();
        assert_eq!(&out[..n], SAMPLE);
    }

    /// Found by the `xz` fuzz target: a block header (valid CRC) whose flags claim three
    /// filters in a four-byte header. xz4rust 0.2.3 indexed past the header and panicked;
    /// the copy in third_party/ refuses it.
    #[test]
    fn block_header_filters_past_the_end_is_an_error() {
        let input: &[u8] = &[
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x01, 0x02,
            0x04, 0x00, 0x13, 0xa9, 0x10, 0xfe, 0x21, 0x01, 0x08, 0x00, 0xd2, 0xb9, 0x74, 0xcb,
            0xe0, 0x02, 0xfd, 0x37, 0x7a,
        ];
        let (mut dict, mut out) = buffers();
        assert!(decompress(input, &mut dict, &mut out).is_err());
    }

    /// 1 MiB of words and byte runs from a fixed generator (the same as the one that made
    /// `wrap.bin.xz` with `xz --check=crc32 --lzma2=dict=16KiB`): long overlapping
    /// matches, and a dictionary that wraps 64 times, so matches reach back across the
    /// ring's end (both paths of the patched `dict_repeat`).
    fn wrap_sample() -> Vec<u8> {
        const WORDS: [&[u8]; 8] = [
            b"alpha ",
            b"beta ",
            b"gamma ",
            b"delta ",
            b"epsilon\n",
            b"zeta ",
            b"eta ",
            b"theta ",
        ];
        let mut x: u64 = 12345;
        let mut out = Vec::new();
        while out.len() < 1 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = x >> 33;
            if r.is_multiple_of(97) {
                out.resize(out.len() + (r % 500 + 1) as usize, r as u8);
            } else {
                out.extend_from_slice(WORDS[(r % 8) as usize]);
            }
        }
        out.truncate(1 << 20);
        out
    }

    #[test]
    fn matches_across_a_wrapping_dictionary() {
        let want = wrap_sample();
        let xz = include_bytes!("../tests/fixtures/wrap.bin.xz");
        let mut dict = vec![0u8; 16 << 10];
        let mut out = vec![0u8; want.len()];
        assert_eq!(decompress(xz, &mut dict, &mut out).unwrap(), want.len());
        assert!(out == want, "decoded bytes differ");
        // A larger ring than the stream asks for must not change the result.
        let mut dict = vec![0u8; 1 << 20];
        out.fill(0);
        decompress(xz, &mut dict, &mut out).unwrap();
        assert!(out == want);
    }

    #[test]
    fn trailing_size_word_is_ignored() {
        let mut input = SAMPLE_XZ.to_vec();
        input.extend_from_slice(&(SAMPLE.len() as u32).to_le_bytes());
        let (mut dict, mut out) = buffers();
        assert_eq!(
            decompress(&input, &mut dict, &mut out).unwrap(),
            SAMPLE.len()
        );
    }

    #[test]
    fn truncation_is_reported_not_hidden() {
        let (mut dict, mut out) = buffers();
        for cut in [0, 12, 100, SAMPLE_XZ.len() / 2, SAMPLE_XZ.len() - 1] {
            let r = decompress(&SAMPLE_XZ[..cut], &mut dict, &mut out);
            assert!(r.is_err(), "cut at {cut} decoded: {r:?}");
        }
    }

    #[test]
    fn small_output_buffer_is_an_error() {
        let mut dict = vec![0u8; 1 << 20];
        let mut out = vec![0u8; SAMPLE.len() / 2];
        assert_eq!(
            decompress(SAMPLE_XZ, &mut dict, &mut out),
            Err(XzError::OutputTooSmall {
                capacity: SAMPLE.len() / 2
            })
        );
    }

    #[test]
    fn corruption_is_detected() {
        let mut bad = SAMPLE_XZ.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let (mut dict, mut out) = buffers();
        assert!(decompress(&bad, &mut dict, &mut out).is_err());
    }

    /// A real bzImage (e.g. Debian's) given by `PVH_LOADER_TEST_KERNEL`: its payload
    /// decompresses, and the time it takes is printed (for profiling the decoder with
    /// `cargo test --release`); skipped without it.
    #[test]
    fn real_kernel_from_env_decompresses() {
        let Ok(path) = std::env::var("PVH_LOADER_TEST_KERNEL") else {
            return;
        };
        let image = std::fs::read(path).unwrap();
        let bz = crate::bzimage::parse_bzimage(&image).unwrap();
        let size = bz.uncompressed_size_hint().unwrap() as usize;
        let mut dict = vec![0u8; 32 << 20];
        let mut out = vec![0u8; size];
        let t = std::time::Instant::now();
        let n = decompress(bz.payload, &mut dict, &mut out).unwrap();
        eprintln!("{n} bytes in {:?}", t.elapsed());
        assert_eq!(n, size);
    }
}
