//! The xenstore wire format (X `xen/include/public/io/xs_wire.h`, `docs/misc/xenstore.txt`,
//! `docs/misc/xenstore-ring.txt`).
//!
//! Every message is a 16-byte little-endian header (`type`, `req_id`, `tx_id`, `len`) followed by
//! `len` payload bytes. The same framing is used on the Unix socket and on the shared ring.

use std::fmt;

/// Bytes in a message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload in either direction (`XENSTORE_PAYLOAD_MAX`); a client sending more is dropped.
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// Message types (`enum xsd_sockmsg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// Implementation-specific commands (was DEBUG).
    Control = 0,
    /// List the children of a node.
    Directory = 1,
    /// Read a node's value.
    Read = 2,
    /// Read a node's permissions.
    GetPerms = 3,
    /// Add a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Start a transaction.
    TransactionStart = 6,
    /// Commit (`T`) or abort (`F`) a transaction.
    TransactionEnd = 7,
    /// Connect to a domain's ring.
    Introduce = 8,
    /// Disconnect from a domain.
    Release = 9,
    /// `/local/domain/<domid>`.
    GetDomainPath = 10,
    /// Write a node (creating parents).
    Write = 11,
    /// Create a node (and parents) if missing.
    Mkdir = 12,
    /// Remove a subtree.
    Rm = 13,
    /// Replace a node's permissions.
    SetPerms = 14,
    /// Unsolicited watch event.
    WatchEvent = 15,
    /// Error reply.
    Error = 16,
    /// Whether a domain is introduced.
    IsDomainIntroduced = 17,
    /// Re-arm `@releaseDomain` for a domain.
    Resume = 18,
    /// Make a domain act for another.
    SetTarget = 19,
    /// Drop every watch and transaction of the caller.
    ResetWatches = 21,
    /// Part of a long children list.
    DirectoryPart = 22,
}

impl MsgType {
    /// Every type, in numeric order.
    pub const ALL: [MsgType; 22] = [
        MsgType::Control,
        MsgType::Directory,
        MsgType::Read,
        MsgType::GetPerms,
        MsgType::Watch,
        MsgType::Unwatch,
        MsgType::TransactionStart,
        MsgType::TransactionEnd,
        MsgType::Introduce,
        MsgType::Release,
        MsgType::GetDomainPath,
        MsgType::Write,
        MsgType::Mkdir,
        MsgType::Rm,
        MsgType::SetPerms,
        MsgType::WatchEvent,
        MsgType::Error,
        MsgType::IsDomainIntroduced,
        MsgType::Resume,
        MsgType::SetTarget,
        MsgType::ResetWatches,
        MsgType::DirectoryPart,
    ];

    /// The type with this number, if there is one.
    pub fn from_u32(v: u32) -> Option<MsgType> {
        MsgType::ALL.iter().copied().find(|t| *t as u32 == v)
    }

    /// Xen's name for the type (`XS_READ` without the prefix).
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Control => "CONTROL",
            MsgType::Directory => "DIRECTORY",
            MsgType::Read => "READ",
            MsgType::GetPerms => "GET_PERMS",
            MsgType::Watch => "WATCH",
            MsgType::Unwatch => "UNWATCH",
            MsgType::TransactionStart => "TRANSACTION_START",
            MsgType::TransactionEnd => "TRANSACTION_END",
            MsgType::Introduce => "INTRODUCE",
            MsgType::Release => "RELEASE",
            MsgType::GetDomainPath => "GET_DOMAIN_PATH",
            MsgType::Write => "WRITE",
            MsgType::Mkdir => "MKDIR",
            MsgType::Rm => "RM",
            MsgType::SetPerms => "SET_PERMS",
            MsgType::WatchEvent => "WATCH_EVENT",
            MsgType::Error => "ERROR",
            MsgType::IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            MsgType::Resume => "RESUME",
            MsgType::SetTarget => "SET_TARGET",
            MsgType::ResetWatches => "RESET_WATCHES",
            MsgType::DirectoryPart => "DIRECTORY_PART",
        }
    }
}

/// The error names xenstored sends in an ERROR reply (`xsd_errors` in `xs_wire.h`).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument.
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists.
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node or transaction.
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// Quota exceeded.
    ENOSPC,
    /// I/O error.
    EIO,
    /// Directory not empty.
    ENOTEMPTY,
    /// Not implemented.
    ENOSYS,
    /// Read-only connection.
    EROFS,
    /// Busy (e.g. nested transaction).
    EBUSY,
    /// Transaction conflict: retry.
    EAGAIN,
    /// Already connected.
    EISCONN,
    /// Too big (reply, or watch quota).
    E2BIG,
    /// Not permitted.
    EPERM,
}

impl Errno {
    /// Every error, in `xs_wire.h` order.
    pub const ALL: [Errno; 16] = [
        Errno::EINVAL,
        Errno::EACCES,
        Errno::EEXIST,
        Errno::EISDIR,
        Errno::ENOENT,
        Errno::ENOMEM,
        Errno::ENOSPC,
        Errno::EIO,
        Errno::ENOTEMPTY,
        Errno::ENOSYS,
        Errno::EROFS,
        Errno::EBUSY,
        Errno::EAGAIN,
        Errno::EISCONN,
        Errno::E2BIG,
        Errno::EPERM,
    ];

    /// The name sent on the wire (without the trailing NUL).
    pub fn name(self) -> &'static str {
        match self {
            Errno::EINVAL => "EINVAL",
            Errno::EACCES => "EACCES",
            Errno::EEXIST => "EEXIST",
            Errno::EISDIR => "EISDIR",
            Errno::ENOENT => "ENOENT",
            Errno::ENOMEM => "ENOMEM",
            Errno::ENOSPC => "ENOSPC",
            Errno::EIO => "EIO",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ENOSYS => "ENOSYS",
            Errno::EROFS => "EROFS",
            Errno::EBUSY => "EBUSY",
            Errno::EAGAIN => "EAGAIN",
            Errno::EISCONN => "EISCONN",
            Errno::E2BIG => "E2BIG",
            Errno::EPERM => "EPERM",
        }
    }

    /// The error with this name.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// The Linux errno value.
    pub fn code(self) -> i32 {
        match self {
            Errno::EINVAL => 22,
            Errno::EACCES => 13,
            Errno::EEXIST => 17,
            Errno::EISDIR => 21,
            Errno::ENOENT => 2,
            Errno::ENOMEM => 12,
            Errno::ENOSPC => 28,
            Errno::EIO => 5,
            Errno::ENOTEMPTY => 39,
            Errno::ENOSYS => 38,
            Errno::EROFS => 30,
            Errno::EBUSY => 16,
            Errno::EAGAIN => 11,
            Errno::EISCONN => 106,
            Errno::E2BIG => 7,
            Errno::EPERM => 1,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Errno {}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type (a [`MsgType`] number, but unknown values must survive decoding).
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0: none), echoed in the reply.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// The 16 little-endian bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.ty.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// A whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Message type number.
    pub ty: u32,
    /// Request id.
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: u32,
    /// Payload (at most [`PAYLOAD_MAX`] bytes when valid).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message of a known type.
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: impl Into<Vec<u8>>) -> Message {
        Message {
            ty: ty as u32,
            req_id,
            tx_id,
            payload: payload.into(),
        }
    }

    /// The type, if known.
    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u32(self.ty)
    }

    /// The header describing this message.
    pub fn header(&self) -> Header {
        Header {
            ty: self.ty,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.payload.len() as u32,
        }
    }

    /// Header and payload as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&self.header().encode());
        v.extend_from_slice(&self.payload);
        v
    }

    /// An ERROR reply to `req` carrying `err`.
    pub fn error_reply(req_id: u32, tx_id: u32, err: Errno) -> Message {
        let mut p = err.name().as_bytes().to_vec();
        p.push(0);
        Message::new(MsgType::Error, req_id, tx_id, p)
    }

    /// A WATCH_EVENT (`path\0token\0`, ids 0).
    pub fn watch_event(path: &str, token: &[u8]) -> Message {
        let mut p = Vec::with_capacity(path.len() + token.len() + 2);
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(token);
        p.push(0);
        Message::new(MsgType::WatchEvent, 0, 0, p)
    }

    /// If this is an ERROR, the error name it carries.
    pub fn error_name(&self) -> Option<String> {
        if self.ty != MsgType::Error as u32 {
            return None;
        }
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        Some(String::from_utf8_lossy(p).into_owned())
    }
}

/// Why a byte stream cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The header announces more than [`PAYLOAD_MAX`] bytes.
    TooLong(u32),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLong(n) => write!(f, "payload of {n} bytes exceeds {PAYLOAD_MAX}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Reassembles messages from a byte stream (socket reads or ring chunks).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error if the stream
    /// is invalid (the connection must then be dropped).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.buf[..HEADER_LEN]);
        let h = Header::decode(&hb);
        if h.len as usize > PAYLOAD_MAX {
            return Err(WireError::TooLong(h.len));
        }
        let total = HEADER_LEN + h.len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Message {
            ty: h.ty,
            req_id: h.req_id,
            tx_id: h.tx_id,
            payload,
        }))
    }
}

/// Layout of `struct xenstore_domain_interface` (one page) and its index arithmetic.
pub mod ring {
    /// Bytes in each of the request and response rings.
    pub const RING_SIZE: u32 = 1024;
    /// Offset of the request ring (guest → server).
    pub const REQ: usize = 0;
    /// Offset of the response ring (server → guest).
    pub const RSP: usize = 1024;
    /// Offset of `req_cons`.
    pub const REQ_CONS: usize = 2048;
    /// Offset of `req_prod`.
    pub const REQ_PROD: usize = 2052;
    /// Offset of `rsp_cons`.
    pub const RSP_CONS: usize = 2056;
    /// Offset of `rsp_prod`.
    pub const RSP_PROD: usize = 2060;
    /// Offset of `server_features`.
    pub const SERVER_FEATURES: usize = 2064;
    /// Offset of `connection`.
    pub const CONNECTION: usize = 2068;
    /// Offset of `error`.
    pub const ERROR: usize = 2072;
    /// Offset of `evtchn_port`.
    pub const EVTCHN_PORT: usize = 2076;
    /// Bytes of the page the layout needs.
    pub const LAYOUT_END: usize = 2080;

    /// `connection`: connected.
    pub const CONNECTED: u32 = 0;
    /// `connection`: the guest asked for a reconnect.
    pub const RECONNECT: u32 = 1;
    /// `server_features`: reconnection supported.
    pub const FEATURE_RECONNECTION: u32 = 1;

    /// Position of free-running index `i` in a ring.
    pub fn mask(i: u32) -> usize {
        (i % RING_SIZE) as usize
    }

    /// Bytes between `cons` and `prod`, or `None` if the indexes are corrupt
    /// (`prod - cons > RING_SIZE`).
    pub fn used(cons: u32, prod: u32) -> Option<u32> {
        let n = prod.wrapping_sub(cons);
        (n <= RING_SIZE).then_some(n)
    }

    /// The contiguous readable span `(offset, len)` starting at `cons`, or `None` if corrupt.
    pub fn readable(cons: u32, prod: u32) -> Option<(usize, usize)> {
        let n = used(cons, prod)? as usize;
        let off = mask(cons);
        Some((off, n.min(RING_SIZE as usize - off)))
    }

    /// The contiguous writable span `(offset, len)` starting at `prod`, or `None` if corrupt.
    pub fn writable(cons: u32, prod: u32) -> Option<(usize, usize)> {
        let free = (RING_SIZE - used(cons, prod)?) as usize;
        let off = mask(prod);
        Some((off, free.min(RING_SIZE as usize - off)))
    }
}

/// Splits a payload into NUL-terminated strings. A final string without a terminator is kept.
pub fn split_strings(payload: &[u8]) -> Vec<&[u8]> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if payload.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == 0).collect()
}

/// Joins strings, each followed by a NUL.
pub fn join_strings<S: AsRef<[u8]>>(items: &[S]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in items {
        v.extend_from_slice(s.as_ref());
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = Header {
            ty: 2,
            req_id: 0x01020304,
            tx_id: 7,
            len: 5,
        };
        let b = h.encode();
        assert_eq!(&b[4..8], &[4, 3, 2, 1]);
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn type_numbers_match_xs_wire() {
        assert_eq!(MsgType::from_u32(22), Some(MsgType::DirectoryPart));
        assert_eq!(MsgType::from_u32(21), Some(MsgType::ResetWatches));
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(15), Some(MsgType::WatchEvent));
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u32(t as u32), Some(t));
        }
    }

    #[test]
    fn errno_names_round_trip() {
        for e in Errno::ALL {
            assert_eq!(Errno::from_name(e.name()), Some(e));
        }
        assert_eq!(Errno::from_name("EQUOTA"), None);
    }

    #[test]
    fn decoder_reassembles_split_messages_and_rejects_long_ones() {
        let m1 = Message::new(MsgType::Read, 1, 0, b"a\0".to_vec());
        let m2 = Message::new(MsgType::Write, 2, 3, b"a\0xyz".to_vec());
        let mut bytes = m1.encode();
        bytes.extend(m2.encode());
        let mut d = Decoder::new();
        for chunk in bytes.chunks(5) {
            d.push(chunk);
        }
        assert_eq!(d.next_message().unwrap(), Some(m1));
        assert_eq!(d.next_message().unwrap(), Some(m2));
        assert_eq!(d.next_message().unwrap(), None);
        let bad = Header {
            ty: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        d.push(&bad.encode());
        assert_eq!(d.next_message(), Err(WireError::TooLong(4097)));
    }

    #[test]
    fn ring_spans_wrap_and_detect_corruption() {
        assert_eq!(ring::readable(0, 0), Some((0, 0)));
        assert_eq!(ring::readable(1000, 1100), Some((1000, 24)));
        assert_eq!(ring::readable(1024, 1100), Some((0, 76)));
        assert_eq!(ring::writable(0, 0), Some((0, 1024)));
        assert_eq!(ring::writable(100, 1000), Some((1000, 24)));
        assert_eq!(ring::writable(0, 1024), Some((0, 0)));
        // Free-running indexes wrap at 2^32.
        assert_eq!(ring::readable(u32::MAX - 1, 3), Some((1022, 2)));
        assert_eq!(ring::used(0, 1025), None);
        assert_eq!(ring::readable(5, 2), None);
        assert_eq!(ring::writable(0, 2000), None);
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split_strings(b"a\0bc\0"), vec![&b"a"[..], &b"bc"[..]]);
        assert_eq!(split_strings(b"a\0bc"), vec![&b"a"[..], &b"bc"[..]]);
        assert!(split_strings(b"").is_empty());
        assert_eq!(split_strings(b"\0"), vec![&b""[..]]);
        assert_eq!(join_strings(&["x", "yz"]), b"x\0yz\0".to_vec());
    }
}
