//! The shared-ring formats of the PV block and network protocols, x86_64 ABI, as plain
//! byte encoding with no I/O: sizes and offsets from Linux's
//! `include/xen/interface/io/ring.h` (`DEFINE_RING_TYPES`, `__RING_SIZE`, the front and
//! back ring macros), `blkif.h` and `netif.h`.
//!
//! A shared ring page starts with a 64-byte header (`req_prod`, `req_event`, `rsp_prod`,
//! `rsp_event`, 48 bytes of padding) followed by entries, each the union of one request
//! and one response; the entry count is what fits, rounded down to a power of two.
//! Indexes are free-running `u32`s; entry `i` lives in slot `i & (size - 1)`.

/// Ring pages are always 4 KiB (`XEN_PAGE_SIZE`).
pub const PAGE_SIZE: usize = 4096;

/// Offsets in the shared ring header.
pub const OFF_REQ_PROD: usize = 0;
pub const OFF_REQ_EVENT: usize = 4;
pub const OFF_RSP_PROD: usize = 8;
pub const OFF_RSP_EVENT: usize = 12;
/// Where the entries start (`offsetof(struct *_sring, ring)`).
pub const SRING_HEADER: usize = 64;

/// `__RD32`: `x` rounded down to a power of two (0 stays 0).
pub const fn round_down_pow2(x: usize) -> usize {
    if x == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - x.leading_zeros())
    }
}

/// `__CONST_RING_SIZE` for a one-page ring of `entry`-byte entries.
pub const fn ring_size(entry: usize) -> usize {
    round_down_pow2((PAGE_SIZE - SRING_HEADER) / entry)
}

/// The byte offset in the ring page of entry `idx` (any free-running index).
pub const fn slot_offset(idx: u32, entry: usize, size: usize) -> usize {
    SRING_HEADER + (idx as usize & (size - 1)) * entry
}

/// The header of a freshly initialised ring (`SHARED_RING_INIT`): both producers 0,
/// both event thresholds 1.
pub fn init_header() -> [u8; SRING_HEADER] {
    let mut h = [0u8; SRING_HEADER];
    h[OFF_REQ_EVENT..OFF_REQ_EVENT + 4].copy_from_slice(&1u32.to_le_bytes());
    h[OFF_RSP_EVENT..OFF_RSP_EVENT + 4].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// The frontend's private ring state (`struct *_front_ring` without the pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontRing {
    /// Entries in the ring (a power of two).
    pub size: u32,
    /// The next request index to fill (`req_prod_pvt`).
    pub req_prod_pvt: u32,
    /// The next response index to read (`rsp_cons`).
    pub rsp_cons: u32,
}

impl FrontRing {
    pub fn new(size: usize) -> FrontRing {
        assert!(size.is_power_of_two() && size <= 1 << 16);
        FrontRing {
            size: size as u32,
            req_prod_pvt: 0,
            rsp_cons: 0,
        }
    }

    /// `RING_FREE_REQUESTS`.
    pub fn free_requests(&self) -> u32 {
        self.size
            .wrapping_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// Takes the next request index (None when the ring is full).
    pub fn take_request(&mut self) -> Option<u32> {
        if self.free_requests() == 0 {
            return None;
        }
        let i = self.req_prod_pvt;
        self.req_prod_pvt = i.wrapping_add(1);
        Some(i)
    }

    /// Responses the backend published (`rsp_prod`) that were not read yet. A backend
    /// that claims more than the ring holds is itself broken: the count is capped at the
    /// ring size so a caller never loops over garbage forever.
    pub fn unconsumed_responses(&self, rsp_prod: u32) -> u32 {
        rsp_prod.wrapping_sub(self.rsp_cons).min(self.size)
    }

    /// A `req_prod` `ahead` entries beyond what was really filled: what a hostile
    /// frontend publishes.
    pub fn bogus_req_prod(&self, ahead: u32) -> u32 {
        self.req_prod_pvt.wrapping_add(ahead)
    }
}

/// What a Linux backend checks before reading requests: blkback's
/// `RING_REQUEST_PROD_OVERFLOW` (`prod - rsp_prod_pvt > size`: "Frontend provided bogus
/// ring requests", the ring is halted).
pub fn blkback_sees_overflow(req_prod: u32, rsp_prod_pvt: u32, size: u32) -> bool {
    req_prod.wrapping_sub(rsp_prod_pvt) > size
}

/// netback's check in `xenvif_tx_build_gops` (`req_prod - req_cons > XEN_NETIF_TX_RING_SIZE`:
/// "Impossible number of requests", a fatal error that disables the vif).
pub fn netback_sees_overflow(req_prod: u32, req_cons: u32) -> bool {
    req_prod.wrapping_sub(req_cons) > netif::TX_RING_SIZE as u32
}

/// Xenbus states (`include/xen/interface/io/xenbus.h`).
pub mod state {
    pub const UNKNOWN: u32 = 0;
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;

    /// Whether the backend in state `s` has given the device up.
    pub fn is_disconnected(s: u32) -> bool {
        s >= CLOSING
    }
}

/// `blkif.h`: the block ring (x86_64 ABI, which is also the native one on x86_64).
pub mod blkif {
    use super::ring_size;

    pub const OP_READ: u8 = 0;
    pub const OP_WRITE: u8 = 1;
    /// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
    pub const MAX_SEGMENTS: usize = 11;
    /// A sector is 512 bytes whatever the disk says; a page holds 8.
    pub const SECTORS_PER_PAGE: u8 = 8;

    /// `sizeof(struct blkif_request)`: operation, then the packed `blkif_request_rw`
    /// (nr_segments, handle, a 4-byte pad so that id sits at 8, id, sector_number, 11
    /// segments of 8 bytes).
    pub const REQUEST_SIZE: usize = 112;
    pub const OFF_OPERATION: usize = 0;
    pub const OFF_NR_SEGMENTS: usize = 1;
    pub const OFF_HANDLE: usize = 2;
    pub const OFF_ID: usize = 8;
    pub const OFF_SECTOR: usize = 16;
    pub const OFF_SEGMENTS: usize = 24;
    /// `struct blkif_request_segment`: gref (u32), first_sect, last_sect, 2 bytes of padding.
    pub const SEGMENT_SIZE: usize = 8;

    /// `sizeof(struct blkif_response)`: id (u64), operation (u8), status (i16 at 10).
    pub const RESPONSE_SIZE: usize = 16;
    pub const RSP_OFF_ID: usize = 0;
    pub const RSP_OFF_OPERATION: usize = 8;
    pub const RSP_OFF_STATUS: usize = 10;

    /// One ring entry: the union of request and response.
    pub const ENTRY_SIZE: usize = if REQUEST_SIZE > RESPONSE_SIZE {
        REQUEST_SIZE
    } else {
        RESPONSE_SIZE
    };
    /// Entries in a one-page ring.
    pub const RING_SIZE: usize = ring_size(ENTRY_SIZE);

    pub const RSP_OKAY: i16 = 0;
    pub const RSP_ERROR: i16 = -1;
    pub const RSP_EOPNOTSUPP: i16 = -2;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Segment {
        pub gref: u32,
        pub first_sect: u8,
        pub last_sect: u8,
    }

    impl Segment {
        /// A whole page.
        pub fn page(gref: u32) -> Segment {
            Segment {
                gref,
                first_sect: 0,
                last_sect: SECTORS_PER_PAGE - 1,
            }
        }
    }

    /// A read or write request. `nr_segments` is sent as given, even beyond the 11
    /// slots the entry has (that is one of the attacks); the slots hold `segs`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Request {
        pub operation: u8,
        pub nr_segments: u8,
        pub handle: u16,
        pub id: u64,
        pub sector: u64,
        pub segs: [Segment; MAX_SEGMENTS],
    }

    impl Request {
        /// A read of `segs` (at most 11) whole pages from `sector`.
        pub fn read(id: u64, sector: u64, segs: &[Segment]) -> Request {
            assert!(segs.len() <= MAX_SEGMENTS);
            let mut r = Request {
                operation: OP_READ,
                nr_segments: segs.len() as u8,
                handle: 0,
                id,
                sector,
                segs: [Segment::default(); MAX_SEGMENTS],
            };
            r.segs[..segs.len()].copy_from_slice(segs);
            r
        }

        pub fn encode(&self) -> [u8; REQUEST_SIZE] {
            let mut b = [0u8; REQUEST_SIZE];
            b[OFF_OPERATION] = self.operation;
            b[OFF_NR_SEGMENTS] = self.nr_segments;
            b[OFF_HANDLE..OFF_HANDLE + 2].copy_from_slice(&self.handle.to_le_bytes());
            b[OFF_ID..OFF_ID + 8].copy_from_slice(&self.id.to_le_bytes());
            b[OFF_SECTOR..OFF_SECTOR + 8].copy_from_slice(&self.sector.to_le_bytes());
            for (i, s) in self.segs.iter().enumerate() {
                let o = OFF_SEGMENTS + i * SEGMENT_SIZE;
                b[o..o + 4].copy_from_slice(&s.gref.to_le_bytes());
                b[o + 4] = s.first_sect;
                b[o + 5] = s.last_sect;
            }
            b
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Response {
        pub id: u64,
        pub operation: u8,
        pub status: i16,
    }

    impl Response {
        pub fn decode(b: &[u8; RESPONSE_SIZE]) -> Response {
            let mut id = [0u8; 8];
            id.copy_from_slice(&b[RSP_OFF_ID..RSP_OFF_ID + 8]);
            Response {
                id: u64::from_le_bytes(id),
                operation: b[RSP_OFF_OPERATION],
                status: i16::from_le_bytes([b[RSP_OFF_STATUS], b[RSP_OFF_STATUS + 1]]),
            }
        }
    }
}

/// `netif.h`: the transmit and receive rings.
pub mod netif {
    use super::ring_size;

    /// `struct xen_netif_tx_request`: gref (u32), offset, flags, id, size (u16 each).
    pub const TX_REQUEST_SIZE: usize = 12;
    /// `struct xen_netif_tx_response`: id (u16), status (i16).
    pub const TX_RESPONSE_SIZE: usize = 4;
    pub const TX_ENTRY_SIZE: usize = TX_REQUEST_SIZE;
    /// `XEN_NETIF_TX_RING_SIZE` for one page.
    pub const TX_RING_SIZE: usize = ring_size(TX_ENTRY_SIZE);

    /// `struct xen_netif_rx_request`: id (u16), 2 bytes of padding, gref (u32).
    pub const RX_REQUEST_SIZE: usize = 8;
    /// `struct xen_netif_rx_response`: id, offset, flags (u16), status (i16).
    pub const RX_RESPONSE_SIZE: usize = 8;
    pub const RX_RING_SIZE: usize = ring_size(RX_REQUEST_SIZE);

    pub const RSP_DROPPED: i16 = -2;
    pub const RSP_ERROR: i16 = -1;
    pub const RSP_OKAY: i16 = 0;
    /// No response: auxiliary slots (extra info).
    pub const RSP_NULL: i16 = 1;

    /// Smallest frame netback accepts (`ETH_HLEN`); shorter is a plain error response.
    pub const ETH_HLEN: u16 = 14;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TxRequest {
        pub gref: u32,
        pub offset: u16,
        pub flags: u16,
        pub id: u16,
        pub size: u16,
    }

    impl TxRequest {
        pub fn encode(&self) -> [u8; TX_REQUEST_SIZE] {
            let mut b = [0u8; TX_REQUEST_SIZE];
            b[0..4].copy_from_slice(&self.gref.to_le_bytes());
            b[4..6].copy_from_slice(&self.offset.to_le_bytes());
            b[6..8].copy_from_slice(&self.flags.to_le_bytes());
            b[8..10].copy_from_slice(&self.id.to_le_bytes());
            b[10..12].copy_from_slice(&self.size.to_le_bytes());
            b
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TxResponse {
        pub id: u16,
        pub status: i16,
    }

    impl TxResponse {
        pub fn decode(b: &[u8; TX_RESPONSE_SIZE]) -> TxResponse {
            TxResponse {
                id: u16::from_le_bytes([b[0], b[1]]),
                status: i16::from_le_bytes([b[2], b[3]]),
            }
        }
    }

    /// A minimal Ethernet frame: broadcast destination, `src` MAC, the IEEE local
    /// experimental EtherType 0x88b5 (nobody's protocol), zero padding to 60 bytes.
    pub fn probe_frame(src: [u8; 6]) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f[14..30].copy_from_slice(b"fv-hostile-front");
        f
    }

    /// `aa:bb:cc:dd:ee:ff` as six bytes.
    pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
        let mut mac = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut mac {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_match_the_linux_headers() {
        // (4096 - 64) / 112 = 36 -> 32 block requests per page.
        assert_eq!(blkif::ENTRY_SIZE, 112);
        assert_eq!(blkif::RING_SIZE, 32);
        // blkif's MAX_SEGMENTS is chosen so that the request fits 112 bytes exactly.
        assert_eq!(
            blkif::OFF_SEGMENTS + blkif::MAX_SEGMENTS * blkif::SEGMENT_SIZE,
            blkif::REQUEST_SIZE
        );
        // (4096 - 64) / 12 = 336 -> 256; (4096 - 64) / 8 = 504 -> 256.
        assert_eq!(netif::TX_RING_SIZE, 256);
        assert_eq!(netif::RX_RING_SIZE, 256);
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(36), 32);
        assert_eq!(round_down_pow2(64), 64);
        assert_eq!(round_down_pow2(u32::MAX as usize), 1 << 31);
    }

    #[test]
    fn slots_wrap_and_stay_in_the_page() {
        assert_eq!(slot_offset(0, 112, 32), 64);
        assert_eq!(slot_offset(31, 112, 32), 64 + 31 * 112);
        assert_eq!(slot_offset(32, 112, 32), 64);
        assert_eq!(slot_offset(u32::MAX, 112, 32), 64 + 31 * 112);
        assert!(slot_offset(31, 112, 32) + 112 <= PAGE_SIZE);
        assert!(slot_offset(255, 12, 256) + 12 <= PAGE_SIZE);
    }

    #[test]
    fn init_header_sets_the_event_thresholds() {
        let h = init_header();
        assert_eq!(&h[0..16], &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(h[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn front_ring_counts_and_fills() {
        let mut r = FrontRing::new(4);
        assert_eq!(r.free_requests(), 4);
        for i in 0..4 {
            assert_eq!(r.take_request(), Some(i));
        }
        assert_eq!(r.take_request(), None);
        assert_eq!(r.unconsumed_responses(2), 2);
        r.rsp_cons = 2;
        assert_eq!(r.free_requests(), 2);
        // A backend claiming 1000 responses is capped at the ring size.
        assert_eq!(r.unconsumed_responses(1002), 4);
        // Across the u32 wrap.
        let mut w = FrontRing {
            size: 32,
            req_prod_pvt: u32::MAX,
            rsp_cons: u32::MAX,
        };
        assert_eq!(w.take_request(), Some(u32::MAX));
        assert_eq!(w.take_request(), Some(0));
        assert_eq!(w.free_requests(), 30);
        assert_eq!(w.unconsumed_responses(1), 2);
    }

    #[test]
    fn the_bogus_producer_trips_both_backends() {
        let mut r = FrontRing::new(blkif::RING_SIZE);
        r.take_request();
        r.rsp_cons = 1;
        // One real request answered: a correct req_prod does not trip blkback...
        assert!(!blkback_sees_overflow(r.req_prod_pvt, 1, r.size));
        // ...a full ring does not either, one more does, and 10000 ahead surely does.
        assert!(!blkback_sees_overflow(1 + r.size, 1, r.size));
        assert!(blkback_sees_overflow(2 + r.size, 1, r.size));
        assert!(blkback_sees_overflow(r.bogus_req_prod(10000), 1, r.size));
        // Even across the wrap.
        assert!(blkback_sees_overflow(
            u32::MAX.wrapping_add(10000),
            u32::MAX,
            r.size
        ));
        assert!(!netback_sees_overflow(256, 0));
        assert!(netback_sees_overflow(257, 0));
        assert!(netback_sees_overflow(5u32.wrapping_add(10000), 5));
    }

    #[test]
    fn block_request_encoding() {
        let segs = [blkif::Segment::page(0x1234_5678), blkif::Segment::page(9)];
        let mut r = blkif::Request::read(0x0102_0304_0506_0708, 0x1122_3344_5566_7788, &segs);
        r.handle = 51712;
        let b = r.encode();
        assert_eq!(b[0], blkif::OP_READ);
        assert_eq!(b[1], 2);
        assert_eq!(&b[2..4], &51712u16.to_le_bytes());
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[24..32], &[0x78, 0x56, 0x34, 0x12, 0, 7, 0, 0]);
        assert_eq!(&b[32..40], &[9, 0, 0, 0, 0, 7, 0, 0]);
        assert!(b[40..].iter().all(|&x| x == 0));
        // nr_segments is sent as given, beyond the 11 slots.
        let mut bad = r;
        bad.nr_segments = 200;
        assert_eq!(bad.encode()[1], 200);
    }

    #[test]
    fn block_response_decoding() {
        let mut b = [0u8; blkif::RESPONSE_SIZE];
        b[0..8].copy_from_slice(&77u64.to_le_bytes());
        b[8] = blkif::OP_READ;
        b[10..12].copy_from_slice(&(-1i16).to_le_bytes());
        assert_eq!(
            blkif::Response::decode(&b),
            blkif::Response {
                id: 77,
                operation: 0,
                status: blkif::RSP_ERROR
            }
        );
    }

    #[test]
    fn net_encoding() {
        let t = netif::TxRequest {
            gref: 0xffff_fff0,
            offset: 0x10,
            flags: 0,
            id: 3,
            size: 60,
        };
        assert_eq!(
            t.encode(),
            [0xf0, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 3, 0, 60, 0]
        );
        assert_eq!(
            netif::TxResponse::decode(&[3, 0, 0xff, 0xff]),
            netif::TxResponse {
                id: 3,
                status: netif::RSP_ERROR
            }
        );
        let mac = netif::parse_mac("00:16:3e:0a:0b:ff").unwrap();
        assert_eq!(mac, [0x00, 0x16, 0x3e, 0x0a, 0x0b, 0xff]);
        assert_eq!(netif::parse_mac("00:16:3e:0a:0b"), None);
        assert_eq!(netif::parse_mac("00:16:3e:0a:0b:ff:01"), None);
        assert_eq!(netif::parse_mac("0:16:3e:0a:0b:ff"), None);
        let f = netif::probe_frame(mac);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert!(f.len() as u16 >= netif::ETH_HLEN);
    }
}
