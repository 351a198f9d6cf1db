//! The xenstore wire format (`dom0-tools/xenstore/src/wire.rs`) and path rules.
//!
//! Input: one byte choosing how the stream is cut into reads, then the byte stream.
//! Checks: the messages decoded do not depend on how the stream arrives (whole, or in
//! chunks); every message re-encodes to exactly the bytes it was decoded from; payload
//! limits hold; the string, permission and path helpers round-trip; ring index arithmetic
//! stays inside the ring.

use xenstore::core::path::{canonicalize, parent, valid_special};
use xenstore::wire::{join_strings, ring, split_strings, Decoder, Message, WireError, PAYLOAD_MAX};
use xenstore::{Errno, MsgType, Perm};

/// Decodes `stream` fed in reads of `chunk` bytes (0: all at once): the messages, the
/// error that ended decoding if any, and the bytes left pending.
fn decode(stream: &[u8], chunk: usize) -> (Vec<Message>, Option<WireError>, usize) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let pieces: Vec<&[u8]> = if chunk == 0 {
        vec![stream]
    } else {
        stream.chunks(chunk).collect()
    };
    for p in pieces {
        d.push(p);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e), d.pending()),
            }
        }
    }
    (out, None, d.pending())
}

/// The wire target.
pub fn target_xenstore_wire(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream, 0);
    let chunked = decode(stream, usize::from(sel % 37) + 1);
    // The same messages and the same verdict however the stream arrives (after an error the
    // connection is dropped, so what was buffered beyond it does not matter).
    assert_eq!(whole.0, chunked.0, "decoding depends on read boundaries");
    assert_eq!(whole.1, chunked.1, "decoding depends on read boundaries");
    if whole.1.is_none() {
        assert_eq!(whole.2, chunked.2);
    }
    let (msgs, err, pending) = whole;

    // Round trip: the encodings of the messages are the consumed prefix of the stream.
    let mut encoded = Vec::new();
    for m in &msgs {
        assert!(m.payload.len() <= PAYLOAD_MAX);
        let h = m.header();
        assert_eq!(h.len as usize, m.payload.len());
        assert_eq!(xenstore::wire::Header::decode(&h.encode()), h);
        encoded.extend_from_slice(&m.encode());
    }
    assert_eq!(&stream[..encoded.len()], &encoded[..]);
    assert_eq!(encoded.len() + pending, stream.len());
    if let Some(WireError::TooLong(n)) = err {
        assert!(n as usize > PAYLOAD_MAX);
    }

    for m in msgs.iter().take(8) {
        if let Some(t) = m.msg_type() {
            assert_eq!(MsgType::from_u32(t as u32), Some(t));
            let _ = t.name();
        }
        let _ = m.error_name();
        // Strings: join(split(p)) is p with a terminating NUL.
        let parts = split_strings(&m.payload);
        let joined = join_strings(&parts);
        if m.payload.is_empty() {
            assert!(joined.is_empty());
        } else if m.payload.ends_with(&[0]) {
            assert_eq!(joined, m.payload);
        } else {
            assert_eq!(&joined[..joined.len() - 1], &m.payload[..]);
        }
        for p in parts.iter().take(8) {
            if let Some(perm) = Perm::parse(p) {
                assert_eq!(Perm::parse(perm.to_string().as_bytes()), Some(perm));
            }
            if let Ok(name) = std::str::from_utf8(p) {
                if let Some(e) = Errno::from_name(name) {
                    assert_eq!(e.name(), name);
                }
            }
            let domid = u16::from(sel);
            for quota in [None, Some(64)] {
                if let Ok(abs) = canonicalize(domid, p, quota) {
                    assert!(abs.starts_with('/'));
                    assert!(abs.len() <= xenstore::wire::ABS_PATH_MAX);
                    assert_eq!(canonicalize(domid, abs.as_bytes(), None), Ok(abs.clone()));
                    // Every ancestor is a valid path too.
                    let mut p = abs.as_str();
                    while let Some(up) = parent(p) {
                        assert!(canonicalize(0, up.as_bytes(), None).is_ok(), "{up}");
                        p = up;
                    }
                }
            }
            if let Some(s) = valid_special(p) {
                assert!(s.starts_with('@'));
            }
        }
    }

    // Ring indexes from the first 8 bytes.
    let mut w = [0u8; 8];
    let n = stream.len().min(8);
    w[..n].copy_from_slice(&stream[..n]);
    let cons = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    let prod = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
    let size = ring::RING_SIZE as usize;
    match ring::used(cons, prod) {
        Some(used) => {
            let (roff, rlen) = ring::readable(cons, prod).expect("readable when used is");
            let (woff, wlen) = ring::writable(cons, prod).expect("writable when used is");
            assert!(roff < size && roff + rlen <= size && rlen <= used as usize);
            assert!(woff < size && woff + wlen <= size && wlen <= size - used as usize);
        }
        None => {
            assert!(ring::readable(cons, prod).is_none());
            assert!(ring::writable(cons, prod).is_none());
        }
    }
}
