use super::*;
use xen_abi::grant_table::{GTF_ACCEPT_TRANSFER, GTF_PERMIT_ACCESS as PA};

const M: u16 = 2;

#[test]
fn first_pin_validates_type_domid_and_readonly() {
    let ok = word(PA, M);
    assert_eq!(pin_word(ok, M, false, true), Ok(word(PA | GTF_READING, M)));
    assert_eq!(
        pin_word(ok, M, true, true),
        Ok(word(PA | GTF_READING | GTF_WRITING, M))
    );
    // Wrong grantee, invalid entry, transfer entry, sub-page: general_error.
    assert_eq!(
        pin_word(word(PA, 3), M, false, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        pin_word(word(0, M), M, false, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        pin_word(word(GTF_ACCEPT_TRANSFER, M), M, false, true),
        Err(GNTST_GENERAL_ERROR)
    );
    assert_eq!(
        pin_word(word(PA | GTF_SUB_PAGE, M), M, false, true),
        Err(GNTST_GENERAL_ERROR)
    );
    // A read-only grant maps read-only, never writable.
    let ro = word(PA | GTF_READONLY, M);
    assert_eq!(
        pin_word(ro, M, false, true),
        Ok(word(PA | GTF_READONLY | GTF_READING, M))
    );
    assert_eq!(pin_word(ro, M, true, true), Err(GNTST_GENERAL_ERROR));
    // Later pins only add bits, whatever the guest wrote since.
    assert_eq!(
        pin_word(word(0, 9), M, false, false),
        Ok(word(GTF_READING, 9))
    );
}

#[test]
fn unpin_clears_only_what_it_says() {
    let w = word(PA | GTF_READING | GTF_WRITING, M);
    assert_eq!(unpin_word(w, true, false), word(PA | GTF_READING, M));
    assert_eq!(unpin_word(w, true, true), word(PA, M));
    assert_eq!(unpin_word(w, false, false), w);
}

#[test]
fn active_entry_counts_pins_and_captures_the_frame() {
    let mut t = ActiveTable::new();
    let p = t.plan(8, M, true).unwrap();
    assert_eq!(
        p,
        PinPlan {
            first: true,
            update_shared: true
        }
    );
    assert_eq!(t.pin(8, M, true, (0x123, 0x5000)), Ok(0x5000));
    // A second pin ignores the capture: the frame stays the first one.
    assert_eq!(
        t.plan(8, M, false),
        Ok(PinPlan {
            first: false,
            update_shared: false
        })
    );
    assert_eq!(t.pin(8, M, false, (0x999, 0x9000)), Ok(0x5000));
    assert_eq!(t.get(8).unwrap().gfn, 0x123);
    // Another domain cannot pin an entry someone else holds.
    assert_eq!(t.plan(8, 7, false), Err(GNTST_GENERAL_ERROR));
    assert_eq!(t.unpin(8, 7, false), Err(GNTST_GENERAL_ERROR));
    // Unpins: writable first (clears writing only), then the last (clears reading).
    assert_eq!(
        t.unpin(8, M, true),
        Ok(Unpinned {
            clear_writing: true,
            clear_reading: false,
            host: 0x5000
        })
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.unpin(8, M, false),
        Ok(Unpinned {
            clear_writing: true,
            clear_reading: true,
            host: 0x5000
        })
    );
    assert!(t.is_empty());
    assert_eq!(t.unpin(8, M, false), Err(GNTST_GENERAL_ERROR));
}

#[test]
fn first_writable_pin_after_read_only_ones_revalidates() {
    let mut t = ActiveTable::new();
    t.pin(3, M, false, (1, 0x1000)).unwrap();
    assert_eq!(
        t.plan(3, M, true),
        Ok(PinPlan {
            first: false,
            update_shared: true
        })
    );
    t.pin(3, M, true, (0, 0)).unwrap();
    assert_eq!(
        t.plan(3, M, true),
        Ok(PinPlan {
            first: false,
            update_shared: false
        })
    );
    // Unpinning a kind that has no pins is refused and changes nothing.
    t.unpin(3, M, false).unwrap();
    assert_eq!(t.unpin(3, M, false), Err(GNTST_GENERAL_ERROR));
    assert_eq!(t.get(3).unwrap().rw_pins, 1);
}

#[test]
fn pin_counts_are_bounded() {
    let mut t = ActiveTable::new();
    for _ in 0..MAX_PINS {
        t.pin(1, M, false, (1, 0x1000)).unwrap();
    }
    assert_eq!(t.plan(1, M, false), Err(GNTST_GENERAL_ERROR));
    assert_eq!(t.pin(1, M, false, (1, 0x1000)), Err(GNTST_GENERAL_ERROR));
    assert!(t.plan(1, M, true).is_ok());
}

fn mapping(gpa: u64) -> Mapping {
    Mapping {
        granter: 1,
        gref: 8,
        readonly: false,
        gpa,
        host: 0x7000,
    }
}

#[test]
fn maptrack_handles_are_bounded_and_reused() {
    let mut mt = Maptrack::new(3);
    assert_eq!(mt.insert(mapping(0x1000)), Ok(0));
    assert_eq!(mt.insert(mapping(0x2000)), Ok(1));
    assert_eq!(mt.insert(mapping(0x3000)), Ok(2));
    assert!(mt.is_full());
    assert_eq!(mt.insert(mapping(0x4000)), Err(GNTST_NO_SPACE));
    assert_eq!(mt.remove(1).unwrap().gpa, 0x2000);
    assert!(!mt.is_full());
    assert_eq!(mt.remove(1), Err(GNTST_BAD_HANDLE));
    assert_eq!(mt.get(1), Err(GNTST_BAD_HANDLE));
    assert_eq!(mt.get(3), Err(GNTST_BAD_HANDLE));
    assert_eq!(mt.get(u32::MAX), Err(GNTST_BAD_HANDLE));
    assert_eq!(mt.remove(u32::MAX), Err(GNTST_BAD_HANDLE));
    mt.remove(0).unwrap();
    // Lowest free handle first.
    assert_eq!(mt.insert(mapping(0x5000)), Ok(0));
    assert_eq!(mt.insert(mapping(0x6000)), Ok(1));
    assert_eq!(mt.len(), 3);
    let mut n = 0;
    let mut from = 0;
    while let Some(h) = mt.next_live(from) {
        mt.remove(h).unwrap();
        from = h + 1;
        n += 1;
    }
    assert_eq!(n, 3);
    assert!(mt.is_empty());
    assert_eq!(mt.next_live(0), None);
}

#[test]
fn maptrack_limit_follows_xen_frames() {
    // Xen: 16-byte `struct grant_mapping`, 256 per 4 KiB frame; 1024 frames by default.
    assert_eq!(maptrack_limit(1024), 262_144);
    assert_eq!(maptrack_limit(64), 16_384);
    assert_eq!(maptrack_limit(u32::MAX), u32::MAX);
    assert_eq!(Maptrack::new(maptrack_limit(1)).limit(), 256);
}

#[test]
fn maptrack_holds_blkback_persistent_grants_and_grows_lazily() {
    let limit = maptrack_limit(1024);
    let mut mt = Maptrack::new(limit);
    assert!(mt.chunks.is_empty(), "nothing allocated up front");
    let n: u32 = 20_000;
    for i in 0..n {
        assert_eq!(mt.insert(mapping(u64::from(i) << 12)), Ok(i));
    }
    assert_eq!(mt.len(), n as usize);
    // Only the chunks the handles need (not the 1024 of the limit).
    assert_eq!(mt.chunks.len(), (n as usize).div_ceil(256));
    assert_eq!(mt.get(n - 1).unwrap().gpa, u64::from(n - 1) << 12);
    // Free every other handle from the top; reuse comes back lowest first.
    for i in (0..n).rev().step_by(2) {
        mt.remove(i).unwrap();
    }
    assert_eq!(mt.len(), (n / 2) as usize);
    assert_eq!(mt.insert(mapping(0)), Ok(1));
    assert_eq!(mt.insert(mapping(0)), Ok(3));
    // Walk and empty it.
    let (mut from, mut seen) = (0, 0);
    while let Some(h) = mt.next_live(from) {
        mt.remove(h).unwrap();
        from = h + 1;
        seen += 1;
    }
    assert_eq!(seen, n / 2 + 2);
    assert!(mt.is_empty());
    // The whole limit is reachable, then no_space.
    let mut small = Maptrack::new(maptrack_limit(70));
    for i in 0..maptrack_limit(70) {
        assert_eq!(small.insert(mapping(0)), Ok(i));
    }
    assert!(small.is_full());
    assert_eq!(small.insert(mapping(0)), Err(GNTST_NO_SPACE));
}

#[test]
fn revoked_entry_is_not_resurrected_by_unpins() {
    // A granter overwrites its mapped entry (flags = 0) while a writable mapping and a
    // read-only one pin it: the unpins only clear the hypervisor's bits, never restore
    // the type, domid or GTF_readonly the guest removed (Xen's unmap clears
    // GTF_writing / GTF_reading on whatever the word holds).
    let mut t = ActiveTable::new();
    let w = pin_word(word(PA, M), M, true, true).unwrap();
    t.pin(8, M, true, (0x10, 0x7000)).unwrap();
    let w = pin_word(w, M, false, false).unwrap();
    t.pin(8, M, false, (0, 0)).unwrap();
    assert_eq!(w, word(PA | GTF_READING | GTF_WRITING, M));
    let revoked = word(0, 0);
    let u = t.unpin(8, M, true).unwrap();
    let w = unpin_word(revoked, u.clear_writing, u.clear_reading);
    assert_eq!(w, revoked);
    // The guest re-grants the ref to someone else meanwhile: the last unpin clears
    // only GTF_reading/GTF_writing of the new entry, and the captured frame stays.
    let regranted = word(PA | GTF_READING, 9);
    assert_eq!(t.get(8).unwrap().host, 0x7000);
    let u = t.unpin(8, M, false).unwrap();
    assert!(u.clear_reading);
    assert_eq!(
        unpin_word(regranted, u.clear_writing, u.clear_reading),
        word(PA, 9)
    );
    assert!(t.is_empty());
    // A new first pin of a revoked entry is refused (general_error).
    assert_eq!(pin_word(revoked, M, false, true), Err(GNTST_GENERAL_ERROR));
}

#[test]
fn copy_sides_and_bounds() {
    use xen_abi::grant_table::GNTST_PERMISSION_DENIED;
    use xen_abi::xen::DOMID_SELF;
    // A gref side takes the low 32 bits of the union and any domid (checked later).
    assert_eq!(
        copy_side(true, 0xdead_0000_0000_0009, 3),
        Ok(CopySide::Gref { domid: 3, gref: 9 })
    );
    assert_eq!(
        copy_side(true, 9, DOMID_SELF),
        Ok(CopySide::Gref {
            domid: DOMID_SELF,
            gref: 9
        })
    );
    // A frame side: DOMID_SELF only, not even the caller's own id (Xen).
    assert_eq!(
        copy_side(false, 0x1_2345, DOMID_SELF),
        Ok(CopySide::Gmfn { gmfn: 0x1_2345 })
    );
    assert_eq!(copy_side(false, 5, 0), Err(GNTST_PERMISSION_DENIED));
    assert_eq!(copy_side(false, 5, 2), Err(GNTST_PERMISSION_DENIED));
    // offset + len <= 4096, without u16 overflow.
    assert!(copy_fits(0, 4096));
    assert!(copy_fits(4096, 0));
    assert!(copy_fits(4000, 96));
    assert!(!copy_fits(4000, 97));
    assert!(!copy_fits(u16::MAX, u16::MAX));
    assert!(!copy_fits(1, 4096));
}
