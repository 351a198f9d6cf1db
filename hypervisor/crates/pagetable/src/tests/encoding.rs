//! Entry encodings per format and input validation.

use std::string::ToString;
use std::vec::Vec;

use super::*;

fn sizes() -> [PageSize; 3] {
    [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]
}

/// Map one page of each size with various attributes, translate inside it, unmap it.
fn round_trip<F: Format>(perms: &[Perm]) {
    let mut env = Env::<F>::new();
    let mts = [
        MemType::WriteBack,
        MemType::Uncacheable,
        MemType::WriteCombining,
        MemType::WriteThrough,
        MemType::WriteProtect,
    ];
    for (i, size) in sizes().into_iter().enumerate() {
        for (j, &perm) in perms.iter().enumerate() {
            let mt = mts[(i + j) % mts.len()];
            let addr = (3 + 8 * j as u64) * G1 + (i as u64) * size.bytes();
            let phys = 0x7_0000_0000 + (j as u64 + 1) * size.bytes();
            env.map_mt(addr, phys, size, perm, mt).unwrap();
            let probe = size.bytes() - 8;
            let t = env.translate(addr + probe).unwrap();
            assert_eq!(
                t,
                Translation {
                    phys: phys + probe,
                    size,
                    perm,
                    memtype: mt,
                    kind: 0
                },
                "{} {size} {perm}",
                F::NAME
            );
            assert_eq!(env.translate(addr + size.bytes()), None);
            let removed = env.unmap(addr, size).unwrap();
            assert_eq!(removed.phys, phys);
            assert_eq!(env.translate(addr), None);
        }
    }
    assert_eq!(env.live_tables(), 1, "only the root is left");
    assert_eq!(env.destroy(), 0);
}

#[test]
fn round_trip_host() {
    round_trip::<Host>(&[Perm::R, Perm::RW, Perm::RX, Perm::RWX]);
}

#[test]
fn round_trip_ept() {
    round_trip::<Ept>(&[Perm::R, Perm::RW, Perm::RX, Perm::RWX, Perm::X]);
}

#[test]
fn round_trip_npt() {
    round_trip::<Npt>(&[Perm::R, Perm::RW, Perm::RX, Perm::RWX]);
}

#[test]
fn ept_raw_bits() {
    let mut env = Env::<Ept>::new();
    env.map(0x4000_0000, 0x8020_0000, PageSize::Size2M, Perm::RWX)
        .unwrap();
    assert_eq!(env.raw(0x4000_0000, 2), 0x8020_0000 | 0x7 | 6 << 3 | 1 << 7);
    let pd = env.raw(0x4000_0000, 3);
    assert_eq!(pd & !ADDR_MASK, 0x7, "non-leaf entries are exactly R|W|X");
    assert_eq!(env.raw(0x4000_0000, 4) & !ADDR_MASK, 0x7);

    env.map_mt(
        0x1000,
        0xfee0_0000,
        PageSize::Size4K,
        Perm::RW,
        MemType::Uncacheable,
    )
    .unwrap();
    assert_eq!(env.raw(0x1000, 1), 0xfee0_0000 | 0x3, "UC is 0, no bit 7");
    env.map_mt(
        0x2000,
        0x5000,
        PageSize::Size4K,
        Perm::R,
        MemType::WriteCombining,
    )
    .unwrap();
    assert_eq!(env.raw(0x2000, 1), 0x5000 | 0x1 | 1 << 3);
}

#[test]
fn eptp_value() {
    assert_eq!(Ept::eptp(0x1234_5000, false), 0x1234_5000 | 6 | 3 << 3);
    assert_eq!(Ept::eptp(0x1234_5000, true), 0x1234_5000 | 0x5e);
    let env = Env::<Ept>::new();
    assert_eq!(env.pt.eptp(false), env.pt.root() | 0x1e);
}

#[test]
fn npt_raw_bits() {
    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const NX: u64 = 1 << 63;
    let mut env = Env::<Npt>::new();
    env.map(0x1000, 0x9000, PageSize::Size4K, Perm::RW).unwrap();
    assert_eq!(env.raw(0x1000, 1), 0x9000 | P | RW | US | NX);
    for level in 2..=4 {
        assert_eq!(env.raw(0x1000, level) & !ADDR_MASK, P | RW | US);
    }
    env.map(G1, 0x4000_0000, PageSize::Size1G, Perm::RX)
        .unwrap();
    assert_eq!(
        env.raw(G1, 3),
        0x4000_0000 | P | US | 1 << 7,
        "WB is all zero"
    );
}

#[test]
fn host_raw_bits() {
    const P: u64 = 1;
    const RW: u64 = 2;
    const NX: u64 = 1 << 63;
    let mut env = Env::<Host>::new();
    let va = 0xffff_8000_0000_0000;
    env.map(va, 0x20_0000, PageSize::Size2M, Perm::RW).unwrap();
    assert_eq!(env.raw(va, 2), 0x20_0000 | P | RW | 1 << 7 | NX);
    assert_eq!(env.raw(va, 3) & !ADDR_MASK, P | RW, "tables: no US, no NX");
    env.map(0x1000, 0x3000, PageSize::Size4K, Perm::RX).unwrap();
    assert_eq!(
        env.raw(0x1000, 1),
        0x3000 | P,
        "supervisor, read-only, executable"
    );
}

/// The PAT bit is bit 7 in a PTE but bit 12 in large leaves, where bit 7 means "large".
#[test]
fn host_pat_bit_position() {
    let mut env = Env::<Host>::new();
    env.map_mt(
        0x1000,
        0x6000,
        PageSize::Size4K,
        Perm::RW,
        MemType::WriteCombining,
    )
    .unwrap();
    assert_eq!(env.raw(0x1000, 1) & 0xf98, 1 << 7, "4K WC: PAT bit 7 only");
    assert_eq!(
        env.translate(0x1000).unwrap().memtype,
        MemType::WriteCombining
    );
    env.map_mt(
        M2,
        0x60_0000,
        PageSize::Size2M,
        Perm::RW,
        MemType::WriteProtect,
    )
    .unwrap();
    let e = env.raw(M2, 2);
    assert_eq!(
        e & 0x1f98,
        1 << 12 | 1 << 7 | 1 << 3,
        "2M WP: PAT(12)+PS+PWT"
    );
    let t = env.translate(M2 + 0x1234).unwrap();
    assert_eq!(t.phys, 0x60_1234, "bit 12 is not mistaken for address");
    assert_eq!(t.memtype, MemType::WriteProtect);
}

#[test]
fn misaligned_addresses() {
    let mut env = Env::<Ept>::new();
    assert_eq!(
        env.map(0x1800, 0x2000, PageSize::Size4K, Perm::R),
        Err(MapError::Misaligned {
            addr: 0x1800,
            size: PageSize::Size4K
        })
    );
    assert_eq!(
        env.map(M2, 0x1000, PageSize::Size2M, Perm::R),
        Err(MapError::Misaligned {
            addr: 0x1000,
            size: PageSize::Size2M
        })
    );
    assert_eq!(
        env.map(M2, G1, PageSize::Size1G, Perm::R),
        Err(MapError::Misaligned {
            addr: M2,
            size: PageSize::Size1G
        })
    );
    assert_eq!(
        env.map_range(0x1000, 0x2800, 0x1000, PageSize::Size2M),
        Err(MapError::Misaligned {
            addr: 0x2800,
            size: PageSize::Size4K
        })
    );
    assert_eq!(env.live_tables(), 1, "validation allocates nothing");
}

#[test]
fn bad_lengths() {
    let mut env = Env::<Npt>::new();
    for len in [0, 0x800, 0x1001] {
        assert_eq!(
            env.map_range(0x1000, 0x1000, len, PageSize::Size4K),
            Err(MapError::BadLength { addr: 0x1000, len })
        );
    }
    let mut host = Env::<Host>::new();
    let top = 0xffff_ffff_ffff_f000;
    assert_eq!(
        host.unmap_range(top, 0x2000),
        Err(MapError::BadLength {
            addr: top,
            len: 0x2000
        })
    );
}

#[test]
fn host_canonical_addresses() {
    let mut env = Env::<Host>::new();
    let bad = 0x0000_8000_0000_0000;
    assert_eq!(
        env.map(bad, 0, PageSize::Size4K, Perm::R),
        Err(MapError::NonCanonical { addr: bad })
    );
    assert_eq!(
        env.map(0x1234_0000_0000_0000, 0, PageSize::Size4K, Perm::R),
        Err(MapError::NonCanonical {
            addr: 0x1234_0000_0000_0000
        })
    );
    // A range running into the hole.
    assert_eq!(
        env.map_range(0x7fff_ffff_f000, 0, 0x2000, PageSize::Size4K),
        Err(MapError::NonCanonical {
            addr: 0x7fff_ffff_f000 + 0x1000
        })
    );
    assert_eq!(env.translate(bad), None);

    // Both halves work, and for_each_leaf reports sign-extended addresses.
    let high = 0xffff_ffff_ffff_f000;
    env.map(high, 0x5000, PageSize::Size4K, Perm::R).unwrap();
    env.map(0x7fff_ffff_f000, 0x6000, PageSize::Size4K, Perm::R)
        .unwrap();
    let leaves: Vec<u64> = env.leaves().keys().copied().collect();
    assert_eq!(leaves, [0x7fff_ffff_f000, high]);
    assert_eq!(env.translate(high + 0xfff).unwrap().phys, 0x5fff);
    assert_eq!(env.unmap_range(high, 0x1000), Ok(0x1000));
}

#[test]
fn guest_physical_limit() {
    let mut ept = Env::<Ept>::new();
    assert_eq!(
        ept.map(1 << 48, 0, PageSize::Size4K, Perm::R),
        Err(MapError::AddressTooLarge { addr: 1 << 48 })
    );
    let mut npt = Env::<Npt>::new();
    // Sign extension is meaningless for guest-physical addresses.
    let a = 0xffff_8000_0000_0000;
    assert_eq!(
        npt.map(a, 0, PageSize::Size4K, Perm::R),
        Err(MapError::AddressTooLarge { addr: a })
    );
    assert_eq!(
        npt.map_range((1 << 48) - 0x1000, 0, 0x2000, PageSize::Size4K),
        Err(MapError::AddressTooLarge { addr: 1 << 48 })
    );
    // The last page below the limit is fine.
    npt.map((1 << 48) - G1, 0, PageSize::Size1G, Perm::R)
        .unwrap();
}

#[test]
fn physical_limit() {
    let mut env = Env::<Ept>::new();
    assert_eq!(
        env.map(0, 1 << 52, PageSize::Size4K, Perm::R),
        Err(MapError::PhysTooLarge { phys: 1 << 52 })
    );
    let phys = (1 << 52) - 0x1000;
    assert_eq!(
        env.map_range(0, phys, 0x2000, PageSize::Size4K),
        Err(MapError::PhysTooLarge { phys })
    );
    env.map(0, phys, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(env.translate(0x10).unwrap().phys, phys + 0x10);
}

#[test]
fn unsupported_permissions() {
    let mut host = Env::<Host>::new();
    for perm in [Perm::NONE, Perm::W, Perm::X, Perm::W | Perm::X] {
        assert_eq!(
            host.map(0, 0, PageSize::Size4K, perm),
            Err(MapError::UnsupportedPerm { perm })
        );
    }
    let mut ept = Env::<Ept>::new();
    for perm in [Perm::NONE, Perm::W, Perm::W | Perm::X] {
        assert_eq!(
            ept.map(0, 0, PageSize::Size4K, perm),
            Err(MapError::UnsupportedPerm { perm })
        );
    }
    ept.map(0, 0, PageSize::Size4K, Perm::X).unwrap();
    assert_eq!(
        ept.protect(0, 0x1000, Perm::W),
        Err(MapError::UnsupportedPerm { perm: Perm::W })
    );
}

#[test]
fn display_strings() {
    let e = MapError::Misaligned {
        addr: 0x1800,
        size: PageSize::Size2M,
    };
    assert_eq!(e.to_string(), "address 0x1800 is not 2 MiB aligned");
    let e = MapError::AlreadyMapped {
        addr: 0x4000_0000,
        size: PageSize::Size1G,
    };
    assert_eq!(e.to_string(), "1 GiB page at 0x40000000 is already mapped");
    assert_eq!((Perm::R | Perm::X).to_string(), "r-x");
    assert_eq!(MemType::WriteCombining.to_string(), "WC");
}
