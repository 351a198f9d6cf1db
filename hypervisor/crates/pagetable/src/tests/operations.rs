//! Engine behaviour: overlap rules, map_range sizing, unmap/split, protect, walks, teardown,
//! out-of-memory handling, and a randomised model check.

use std::collections::HashMap;
use std::vec::Vec;

use super::*;

#[test]
fn no_silent_overwrite() {
    let mut env = Env::<Ept>::new();
    env.map(0x1000, 0x1000, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(
        env.map(0x1000, 0x9000, PageSize::Size4K, Perm::RW),
        Err(MapError::AlreadyMapped {
            addr: 0x1000,
            size: PageSize::Size4K
        })
    );
    assert_eq!(env.translate(0x1000).unwrap().phys, 0x1000, "unchanged");

    // A 2M page over existing 4K pages.
    assert_eq!(
        env.map(0, 0, PageSize::Size2M, Perm::R),
        Err(MapError::SmallerPagesPresent {
            addr: 0,
            size: PageSize::Size2M
        })
    );
    // A 1G page over a region with a table two levels down.
    assert_eq!(
        env.map(0, 0, PageSize::Size1G, Perm::R),
        Err(MapError::SmallerPagesPresent {
            addr: 0,
            size: PageSize::Size1G
        })
    );

    // 4K and 2M pages inside an existing 1G page.
    env.map(G1, 0, PageSize::Size1G, Perm::R).unwrap();
    for (addr, size) in [(G1 + 0x5000, PageSize::Size4K), (G1 + M2, PageSize::Size2M)] {
        assert_eq!(
            env.map(addr, 0, size, Perm::R),
            Err(MapError::AlreadyMapped {
                addr: G1,
                size: PageSize::Size1G
            })
        );
    }
    assert_eq!(env.leaves().len(), 2);
}

#[test]
fn map_range_picks_largest_sizes() {
    // 4K + 2M below a 1G boundary, one 1G page, then 2M + 4K above it.
    let start = G1 - M2 - K4;
    let len = K4 + M2 + G1 + M2 + K4;
    let count = |env: &Env<Ept>| {
        let mut n = [0usize; 3];
        for t in env.leaves().values() {
            n[t.size.level() as usize - 1] += 1;
        }
        n
    };

    let mut env = Env::<Ept>::new();
    env.map_range(start, start, len, PageSize::Size1G).unwrap();
    assert_eq!(count(&env), [2, 2, 1]);
    assert_eq!(env.translate(G1).unwrap().size, PageSize::Size1G);
    assert_eq!(env.translate(G1 - M2).unwrap().size, PageSize::Size2M);
    assert_eq!(env.translate(start).unwrap().size, PageSize::Size4K);
    assert_eq!(
        env.translate(start + len - 1).unwrap().phys,
        start + len - 1
    );
    assert_eq!(env.translate(start + len), None);
    assert_eq!(env.translate(start - 1), None);

    let mut env = Env::<Ept>::new();
    env.map_range(start, start, len, PageSize::Size2M).unwrap();
    assert_eq!(count(&env), [2, 514, 0]);

    let mut env = Env::<Ept>::new();
    env.map_range(start, start, 4 * M2, PageSize::Size4K)
        .unwrap();
    assert_eq!(count(&env), [2048, 0, 0]);
}

#[test]
fn map_range_respects_phys_alignment() {
    let mut env = Env::<Npt>::new();
    // Virtually 2M-aligned, physically only 4K-aligned: nothing larger than 4K fits.
    env.map_range(M2, 0x1000, M2, PageSize::Size1G).unwrap();
    assert_eq!(env.leaves().len(), 512);
    assert!(env.leaves().values().all(|t| t.size == PageSize::Size4K));
    assert_eq!(env.translate(M2 + 0x1_2345).unwrap().phys, 0x1_3345);
}

#[test]
fn unmap_prunes_and_remaps() {
    let mut env = Env::<Host>::new();
    let va = 0xffff_c000_1234_5000;
    env.map(va, 0x7000, PageSize::Size4K, Perm::RW).unwrap();
    assert_eq!(env.live_tables(), 4);
    let removed = env.unmap(va, PageSize::Size4K).unwrap();
    assert_eq!(
        removed,
        Translation {
            phys: 0x7000,
            size: PageSize::Size4K,
            perm: Perm::RW,
            memtype: MemType::WriteBack,
            kind: 0
        }
    );
    assert_eq!(env.translate(va), None);
    assert_eq!(env.live_tables(), 1, "empty tables are freed");
    assert_eq!(
        env.unmap(va, PageSize::Size4K),
        Err(MapError::NotMapped { addr: va })
    );
    env.map(va, 0x8000, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(env.translate(va).unwrap().phys, 0x8000);
}

#[test]
fn unmap_keeps_shared_tables() {
    let mut env = Env::<Ept>::new();
    env.map(0x1000, 0x1000, PageSize::Size4K, Perm::R).unwrap();
    env.map(0x2000, 0x2000, PageSize::Size4K, Perm::R).unwrap();
    env.unmap(0x1000, PageSize::Size4K).unwrap();
    assert_eq!(env.live_tables(), 4);
    assert_eq!(env.translate(0x2000).unwrap().phys, 0x2000);
}

#[test]
fn unmap_4k_splits_2m() {
    let mut env = Env::<Host>::new();
    env.map_mt(
        M2,
        0x80_0000,
        PageSize::Size2M,
        Perm::RX,
        MemType::WriteCombining,
    )
    .unwrap();
    let before = env.live_tables();
    let removed = env.unmap(M2 + 0x3000, PageSize::Size4K).unwrap();
    assert_eq!(removed.phys, 0x80_3000);
    assert_eq!(removed.size, PageSize::Size4K);
    assert_eq!(env.live_tables(), before + 1);
    assert_eq!(env.translate(M2 + 0x3000), None);
    let leaves = env.leaves();
    assert_eq!(leaves.len(), 511);
    for (addr, t) in leaves {
        assert_eq!(t.phys, addr - M2 + 0x80_0000);
        assert_eq!(
            (t.size, t.perm, t.memtype),
            (PageSize::Size4K, Perm::RX, MemType::WriteCombining)
        );
    }
}

#[test]
fn unmap_4k_splits_1g_twice() {
    let mut env = Env::<Npt>::new();
    env.map(G1, 0, PageSize::Size1G, Perm::RW).unwrap();
    let target = G1 + 5 * M2 + 7 * K4;
    env.unmap(target, PageSize::Size4K).unwrap();
    let leaves = env.leaves();
    assert_eq!(leaves.len(), 511 + 511, "511 2M pages and 511 4K pages");
    assert_eq!(env.translate(target), None);
    assert_eq!(env.translate(target + K4).unwrap().phys, 5 * M2 + 8 * K4);
    assert_eq!(env.translate(G1 + 6 * M2).unwrap().size, PageSize::Size2M);
    assert_eq!(env.destroy(), 0);
}

#[test]
fn unmap_larger_than_mapping_is_refused() {
    let mut env = Env::<Ept>::new();
    env.map(0x1000, 0x1000, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(
        env.unmap(0, PageSize::Size2M),
        Err(MapError::SmallerPagesPresent {
            addr: 0,
            size: PageSize::Size2M
        })
    );
    assert_eq!(
        env.unmap(G1, PageSize::Size2M),
        Err(MapError::NotMapped { addr: G1 })
    );
    assert_eq!(env.leaves().len(), 1);
}

#[test]
fn unmap_range_mixed_sizes_and_holes() {
    let mut env = Env::<Ept>::new();
    env.map(0, 0, PageSize::Size2M, Perm::R).unwrap(); // straddles the start
    env.map(M2 + K4, 0x5000, PageSize::Size4K, Perm::R).unwrap();
    env.map(G1, G1, PageSize::Size1G, Perm::R).unwrap(); // straddles the end
    env.map(3 * G1, 0, PageSize::Size4K, Perm::R).unwrap(); // outside

    let start = M2 - 2 * K4;
    let end = G1 + M2;
    let removed = env.unmap_range(start, end - start).unwrap();
    assert_eq!(removed, 2 * K4 + K4 + M2);
    for addr in [start, start + K4, M2 + K4, G1, end - 1] {
        assert_eq!(env.translate(addr), None, "{addr:#x}");
    }
    assert_eq!(env.translate(start - K4).unwrap().phys, start - K4);
    assert_eq!(env.translate(end).unwrap().phys, end);
    assert_eq!(env.translate(3 * G1).unwrap().phys, 0);
    // Unmapping a hole is not an error and needs no flush.
    assert_eq!(env.unmap_range(2 * G1, G1), Ok(0));
}

#[test]
fn protect_ranges() {
    let mut env = Env::<Ept>::new();
    env.map_range(0, 0, 2 * M2, PageSize::Size2M).unwrap();
    env.protect(M2 - K4, 2 * K4, Perm::R).unwrap();
    assert_eq!(env.translate(M2 - 2 * K4).unwrap().perm, Perm::RW);
    assert_eq!(env.translate(M2 - K4).unwrap().perm, Perm::R);
    assert_eq!(env.translate(M2).unwrap().perm, Perm::R);
    assert_eq!(env.translate(M2 + K4).unwrap().perm, Perm::RW);
    assert_eq!(env.translate(M2 + K4).unwrap().phys, M2 + K4);

    // A hole anywhere in the range changes nothing.
    assert_eq!(
        env.protect(M2, 2 * M2, Perm::RX),
        Err(MapError::NotMapped { addr: 2 * M2 })
    );
    assert_eq!(env.translate(M2 + K4).unwrap().perm, Perm::RW);
}

#[test]
fn for_each_leaf_visits_exactly_the_mappings() {
    let mut env = Env::<Npt>::new();
    let want = [
        (0x0000, 0x10_0000, PageSize::Size4K),
        (0x5000, 0x20_0000, PageSize::Size4K),
        (4 * M2, 8 * M2, PageSize::Size2M),
        (7 * G1, G1, PageSize::Size1G),
        ((1 << 47) + 0x3000, 0x3000, PageSize::Size4K),
    ];
    for (addr, phys, size) in want {
        env.map(addr, phys, size, Perm::RW).unwrap();
    }
    let got: Vec<(u64, u64, PageSize)> = env
        .leaves()
        .into_iter()
        .map(|(a, t)| (a, t.phys, t.size))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn wx_audit_via_for_each_leaf() {
    let mut env = Env::<Host>::new();
    let text = 0xffff_ffff_8000_0000;
    env.map(text, 0x10_0000, PageSize::Size4K, Perm::RX)
        .unwrap();
    env.map(text + K4, 0x10_1000, PageSize::Size4K, Perm::RW)
        .unwrap();
    let audit = |env: &Env<Host>| {
        let mut bad = Vec::new();
        env.pt.for_each_leaf(&env.mem, |va, t| {
            if t.perm.contains(Perm::W | Perm::X) {
                bad.push(va);
            }
        });
        bad
    };
    assert!(audit(&env).is_empty());
    env.protect(text + K4, K4, Perm::RWX).unwrap();
    assert_eq!(audit(&env), [text + K4]);
}

#[test]
fn destroy_frees_every_table() {
    let mut env = Env::<Host>::new();
    env.map_range(0, 0, 3 * G1 + 5 * K4, PageSize::Size1G)
        .unwrap();
    env.map_range(0xffff_8000_0000_0000, 0, 9 * M2, PageSize::Size2M)
        .unwrap();
    env.map(0xffff_ffff_ffe0_0000, 0, PageSize::Size4K, Perm::R)
        .unwrap();
    env.unmap(G1 + 3 * M2, PageSize::Size2M).unwrap(); // split leftovers too
    assert!(env.live_tables() > 5);
    assert_eq!(env.destroy(), 0);
}

#[test]
fn out_of_memory_in_map_changes_nothing() {
    let mut env = Env::<Ept>::new();
    env.set_budget(Some(2)); // a fresh 4K path needs 3 tables
    assert_eq!(
        env.map(0x1000, 0x1000, PageSize::Size4K, Perm::R),
        Err(MapError::OutOfMemory)
    );
    assert_eq!(env.live_tables(), 1, "partial path freed");
    assert!(env.leaves().is_empty());
    assert_eq!(env.raw(0x1000, 4), 0, "root untouched");
    env.set_budget(Some(2));
    // With the same budget a 1G page (no new tables) and a 2M page (2 tables) fit.
    env.map(G1, 0, PageSize::Size1G, Perm::R).unwrap();
    env.map(0, 0, PageSize::Size2M, Perm::R).unwrap();
    env.set_budget(None);
    env.map(M2, 0, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(env.leaves().len(), 3);
}

#[test]
fn out_of_memory_in_map_range_rolls_back() {
    let mut env = Env::<Ept>::new();
    env.map(4 * G1, 0, PageSize::Size4K, Perm::R).unwrap(); // pre-existing, must survive
    let before = env.live_tables();
    // Two 2M pages in two new PDs, then a 4K tail needing a PT: budget 2 fails on the PT.
    env.set_budget(Some(2));
    assert_eq!(
        env.map_range(G1 - M2, 0, M2 + K4 + M2, PageSize::Size2M),
        Err(MapError::OutOfMemory)
    );
    assert_eq!(env.live_tables(), before, "everything allocated was freed");
    assert_eq!(env.leaves().len(), 1);
    assert!(env.translate(4 * G1).is_some());
}

#[test]
fn map_range_overlap_rolls_back() {
    let mut env = Env::<Npt>::new();
    env.map(3 * K4, 0, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(
        env.map_range(0, 0, 8 * K4, PageSize::Size2M),
        Err(MapError::AlreadyMapped {
            addr: 3 * K4,
            size: PageSize::Size4K
        })
    );
    assert_eq!(env.leaves().len(), 1);
    assert_eq!(env.translate(3 * K4).unwrap().perm, Perm::R);
}

#[test]
fn out_of_memory_on_split_is_reported() {
    let mut env = Env::<Ept>::new();
    env.map(0, 0, PageSize::Size2M, Perm::R).unwrap();
    env.set_budget(Some(0));
    assert_eq!(env.unmap(K4, PageSize::Size4K), Err(MapError::OutOfMemory));
    assert_eq!(
        env.translate(K4).unwrap().size,
        PageSize::Size2M,
        "still intact"
    );
    assert_eq!(env.new_root_fails(), Err(MapError::OutOfMemory));
}

#[test]
fn new_tables_are_cleared() {
    // Frames arrive full of garbage; if the engine didn't clear them, garbage would be present.
    let mut env = Env::<Host>::new();
    env.map(0x1000, 0x1000, PageSize::Size4K, Perm::R).unwrap();
    assert_eq!(env.leaves().len(), 1);
    assert_eq!(env.translate(0x2000), None);
    assert_eq!(env.translate(M2), None);
}

#[test]
fn from_root_rebuilds_the_view() {
    let mut env = Env::<Ept>::new();
    env.map(M2, 0x40_0000, PageSize::Size2M, Perm::RW).unwrap();
    let again = PageTable::<Ept>::from_root(env.pt.root());
    assert_eq!(again.translate(&env.mem, M2 + 5).unwrap().phys, 0x40_0005);
}

/// Random map_range/unmap_range/protect against a per-4K model, checked after every step.
#[test]
fn random_ops_match_model() {
    let mut env = Env::<Ept>::new();
    let mut model: HashMap<u64, (u64, Perm)> = HashMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pages = 4 * 512; // four 2M regions
    for _ in 0..300 {
        let first = rand(pages);
        let count = 1 + rand((pages - first).min(600));
        let (addr, len) = (first * K4, count * K4);
        match rand(3) {
            0 => {
                let phys = (rand(4) * 512 + first % 512) * K4 + 0x1_0000_0000;
                let free = (first..first + count).all(|p| !model.contains_key(&p));
                let r = env.map_range(addr, phys, len, PageSize::Size2M);
                assert_eq!(r.is_ok(), free, "{r:?}");
                if free {
                    for i in 0..count {
                        model.insert(first + i, (phys + i * K4, Perm::RW));
                    }
                }
            }
            1 => {
                let n = (first..first + count)
                    .filter(|p| model.remove(p).is_some())
                    .count();
                assert_eq!(env.unmap_range(addr, len), Ok(n as u64 * K4));
            }
            _ => {
                let perm = [Perm::R, Perm::RX, Perm::RWX][rand(3) as usize];
                let all = (first..first + count).all(|p| model.contains_key(&p));
                assert_eq!(env.protect(addr, len, perm).is_ok(), all);
                if all {
                    for p in first..first + count {
                        model.get_mut(&p).unwrap().1 = perm;
                    }
                }
            }
        }
        for p in 0..pages {
            let got = env.translate(p * K4).map(|t| (t.phys, t.perm));
            assert_eq!(got, model.get(&p).copied(), "page {p}");
        }
    }
    assert_eq!(
        env.leaves()
            .values()
            .map(|t| t.size.bytes() / K4)
            .sum::<u64>(),
        model.len() as u64
    );
    assert_eq!(env.destroy(), 0);
}
