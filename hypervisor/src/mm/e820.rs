//! e820 maps for guests: plain Rust, host-tested.

use arrayvec::ArrayVec;
use ferrovisor_boot::MemoryRegion;

/// e820 types.
pub const RAM: u32 = 1;
pub const RESERVED: u32 = 2;
pub const NVS: u32 = 4;

/// A domain's e820 map: (start, length, type), sorted, disjoint.
pub type E820 = ArrayVec<(u64, u64, u32), 64>;

/// Adds a `RESERVED` entry for every part of every `host` region at or above `from` that
/// no entry of `map` covers yet, and sorts `map`. For a dom0 laid out on the host's
/// addresses: what it does not own of the host's map must not look free to it. Entries
/// past the map's capacity are dropped (the map stays valid, only less complete).
pub fn reserve_uncovered(map: &mut E820, host: &[MemoryRegion], from: u64) {
    for h in host {
        let (start, end) = (h.start.max(from), h.end());
        if start >= end {
            continue;
        }
        let mut pieces: ArrayVec<(u64, u64), 64> = ArrayVec::new();
        pieces.push((start, end));
        for &(s, len, _) in map.iter() {
            let e = s.saturating_add(len);
            let mut next: ArrayVec<(u64, u64), 64> = ArrayVec::new();
            for (a, b) in pieces {
                for p in [(a, b.min(s)), (a.max(e), b)] {
                    if p.0 < p.1 {
                        let _ = next.try_push(p);
                    }
                }
            }
            pieces = next;
        }
        for (a, b) in pieces {
            let _ = map.try_push((a, b - a, RESERVED));
        }
    }
    map.sort_unstable_by_key(|e| e.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovisor_boot::MemoryKind;

    fn region(start: u64, end: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion {
            start,
            len: end - start,
            kind,
        }
    }

    #[test]
    fn host_regions_outside_the_domain_are_reserved() {
        const MIB: u64 = 1 << 20;
        let host = [
            region(0, 0x9fc00, MemoryKind::Usable),
            region(0x100000, 1024 * MIB, MemoryKind::Usable),
            region(1024 * MIB, 1024 * MIB + 0x20000, MemoryKind::Reserved),
            region(0xfffc_0000, 0x1_0000_0000, MemoryKind::Reserved),
        ];
        let mut map = E820::new();
        map.push((0, 0xa0000, RAM));
        map.push((2 * MIB, 100 * MIB, RAM));
        map.push((200 * MIB, 50 * MIB, RAM));
        reserve_uncovered(&mut map, &host, 2 * MIB);
        assert_eq!(
            map.as_slice(),
            &[
                (0, 0xa0000, RAM),
                (2 * MIB, 100 * MIB, RAM),
                (102 * MIB, 98 * MIB, RESERVED),
                (200 * MIB, 50 * MIB, RAM),
                (250 * MIB, 774 * MIB, RESERVED),
                (1024 * MIB, 0x20000, RESERVED),
                (0xfffc_0000, 0x40000, RESERVED),
            ]
        );
        // Disjoint and sorted.
        for w in map.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0);
        }
    }

    #[test]
    fn regions_below_the_start_or_empty_add_nothing() {
        let host = [
            region(0, 0x9fc00, MemoryKind::Usable),
            region(0x100000, 0x100000, MemoryKind::Usable),
        ];
        let mut map = E820::new();
        reserve_uncovered(&mut map, &host, 2 << 20);
        assert!(map.is_empty());
    }
}
