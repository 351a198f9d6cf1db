//! Software types (`map_kind`): stored in bits the walker ignores, reported by translate and
//! for_each_leaf, kept across splits and protect, in every format.

use super::*;

fn kinds_survive<F: Format>() {
    let mut env = Env::<F>::new();
    let base = if F::SIGN_EXTENDED_INPUT {
        0xffff_c000_0000_0000
    } else {
        0x4000_0000
    };
    for kind in 0..=KIND_MAX {
        let addr = base + u64::from(kind) * K4;
        let (mem, frames) = (&mut env.mem, &mut env.frames);
        env.pt
            .map_kind(
                mem,
                frames,
                addr,
                0x9_0000_0000 + u64::from(kind) * K4,
                PageSize::Size4K,
                Perm::R,
                MemType::WriteBack,
                kind,
            )
            .unwrap();
        let t = env.translate(addr + 8).unwrap();
        assert_eq!(t.kind, kind, "{}", F::NAME);
        assert_eq!(t.phys, 0x9_0000_0000 + u64::from(kind) * K4 + 8);
        assert_eq!(t.perm, Perm::R);
        // The bits sit in 52..55, outside the address field.
        assert_eq!(env.raw(addr, 1) >> 52 & 0xf, u64::from(kind));
    }
    // protect keeps the type.
    env.protect(base + 3 * K4, K4, Perm::RW).unwrap();
    let t = env.translate(base + 3 * K4).unwrap();
    assert_eq!((t.kind, t.perm), (3, Perm::RW));
    assert_eq!(
        env.leaves()
            .values()
            .map(|t| u32::from(t.kind))
            .sum::<u32>(),
        (0..=15).sum::<u32>()
    );
    // Out of range.
    let (mem, frames) = (&mut env.mem, &mut env.frames);
    assert_eq!(
        env.pt.map_kind(
            mem,
            frames,
            base + M2,
            0,
            PageSize::Size4K,
            Perm::R,
            MemType::WriteBack,
            KIND_MAX + 1
        ),
        Err(MapError::BadKind { kind: KIND_MAX + 1 })
    );
    // The removed translation reports the type too.
    assert_eq!(env.unmap(base + 5 * K4, PageSize::Size4K).unwrap().kind, 5);
}

#[test]
fn kinds_in_every_format() {
    kinds_survive::<Ept>();
    kinds_survive::<Npt>();
    kinds_survive::<Host>();
}

#[test]
fn split_keeps_the_kind() {
    let mut env = Env::<Ept>::new();
    let (mem, frames) = (&mut env.mem, &mut env.frames);
    env.pt
        .map_kind(
            mem,
            frames,
            M2,
            0x20_0000,
            PageSize::Size2M,
            Perm::RWX,
            MemType::WriteBack,
            9,
        )
        .unwrap();
    // Unmapping one 4K page splits the 2M leaf; the 511 others keep type 9.
    env.unmap(M2 + K4, PageSize::Size4K).unwrap();
    let leaves = env.leaves();
    assert_eq!(leaves.len(), 511);
    assert!(leaves
        .values()
        .all(|t| t.kind == 9 && t.size == PageSize::Size4K));
}

#[test]
fn plain_map_has_kind_zero() {
    let mut env = Env::<Npt>::new();
    env.map(0x1000, 0x2000, PageSize::Size4K, Perm::RW).unwrap();
    assert_eq!(env.translate(0x1000).unwrap().kind, 0);
    assert_eq!(env.raw(0x1000, 1) >> 52 & 0xf, 0);
}
