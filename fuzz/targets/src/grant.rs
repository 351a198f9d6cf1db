//! Grant tables (`hypervisor/crates/grant`) driven by sequences of map, unmap, copy,
//! teardown and guest edits of shared entries, the way the hypervisor combines the crate's
//! pieces: [`ActiveTable::plan`], [`pin_word`] on the live shared word, [`ActiveTable::pin`],
//! [`Maptrack::insert`], and back.
//!
//! The guest here edits its entries as a well-behaved granter does (type, read-only flag and
//! grantee, never the `reading`/`writing` bits the hypervisor owns). Checks after every step:
//! each active entry's read-only and writable pin counts equal the live mappings of that
//! entry, all held by the entry's mapper; the shared word's `reading`/`writing` bits say
//! exactly whether pins (writable pins) exist; every maptrack holds exactly the model's
//! handles, each below its limit, found by `get` and by a `next_live` walk; unpinning returns
//! the frame the first pin captured; pinning never changes a word's domid or clears a bit.

use std::collections::BTreeMap;

use grant::{
    copy_fits, copy_side, maptrack_limit, pin_word, unpin_word, word, word_domid, word_flags,
    ActiveTable, CopySide, Mapping, Maptrack, COPY_PAGE,
};
use xen_abi::grant_table::{
    GNTST_PERMISSION_DENIED, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_WRITING,
};
use xen_abi::xen::DOMID_SELF;

use crate::input::Input;

/// Operations per input (longer inputs are cut): the invariants are checked after each one.
const MAX_STEPS: u32 = 160;

/// Grant references per granter.
const GREFS: u32 = 8;
/// Domains: each grants and maps.
const DOMS: u16 = 3;

struct World {
    words: Vec<[u32; GREFS as usize]>,
    active: Vec<ActiveTable>,
    maptrack: Vec<Maptrack>,
    /// (mapper, handle) → mapping, as the model says.
    live: BTreeMap<(u16, u32), Mapping>,
}

fn host_of(granter: u16, gref: u32) -> u64 {
    0x10_0000 + u64::from(granter) * 64 + u64::from(gref)
}

impl World {
    fn new(inp: &mut Input<'_>) -> World {
        World {
            words: vec![[0; GREFS as usize]; DOMS as usize],
            active: (0..DOMS).map(|_| ActiveTable::new()).collect(),
            maptrack: (0..DOMS)
                .map(|_| match inp.u8() % 4 {
                    3 => Maptrack::new(3),
                    frames => Maptrack::new(maptrack_limit(u32::from(frames))),
                })
                .collect(),
            live: BTreeMap::new(),
        }
    }

    /// Pins `gref` of `granter` for `mapper` as a map or copy does; returns the host frame.
    fn pin(&mut self, granter: u16, gref: u32, mapper: u16, writable: bool) -> Option<u64> {
        let (g, r) = (usize::from(granter), gref as usize);
        let plan = self.active[g].plan(gref, mapper, writable).ok()?;
        let old = self.words[g][r];
        let new = if plan.update_shared {
            let new = pin_word(old, mapper, writable, true).ok()?;
            check_pin_word(old, new, writable);
            Some(new)
        } else {
            None
        };
        let host = self.active[g]
            .pin(gref, mapper, writable, (gref + 100, host_of(granter, gref)))
            .expect("a planned pin failed");
        if let Some(new) = new {
            self.words[g][r] = new;
        }
        assert_eq!(host, host_of(granter, gref), "pin on another frame");
        Some(host)
    }

    fn unpin(&mut self, granter: u16, gref: u32, mapper: u16, writable: bool) {
        let (g, r) = (usize::from(granter), gref as usize);
        let u = self.active[g]
            .unpin(gref, mapper, writable)
            .expect("unpin of a pin we hold failed");
        assert_eq!(u.host, host_of(granter, gref));
        let old = self.words[g][r];
        let new = unpin_word(old, u.clear_writing, u.clear_reading);
        assert_eq!(word_domid(new), word_domid(old));
        assert_eq!(word_flags(new) & !word_flags(old), 0, "unpin set a bit");
        self.words[g][r] = new;
    }

    fn map(&mut self, mapper: u16, granter: u16, gref: u32, writable: bool) {
        if self.maptrack[usize::from(mapper)].is_full() {
            return;
        }
        let Some(host) = self.pin(granter, gref, mapper, writable) else {
            return;
        };
        let m = Mapping {
            granter,
            gref,
            readonly: !writable,
            gpa: 0x8000_0000 + u64::from(gref) * 4096,
            host,
        };
        let h = self.maptrack[usize::from(mapper)]
            .insert(m)
            .expect("insert into a maptrack that is not full");
        assert!(h < self.maptrack[usize::from(mapper)].limit());
        assert!(
            self.live.insert((mapper, h), m).is_none(),
            "handle {h} given twice"
        );
    }

    fn unmap(&mut self, mapper: u16, handle: u32) {
        match self.maptrack[usize::from(mapper)].remove(handle) {
            Ok(m) => {
                assert_eq!(self.live.remove(&(mapper, handle)), Some(m));
                self.unpin(m.granter, m.gref, mapper, !m.readonly);
            }
            Err(_) => assert!(!self.live.contains_key(&(mapper, handle))),
        }
    }

    fn teardown(&mut self, mapper: u16) {
        let mut h = 0;
        while let Some(next) = self.maptrack[usize::from(mapper)].next_live(h) {
            self.unmap(mapper, next);
            h = next + 1;
        }
        assert!(self.maptrack[usize::from(mapper)].is_empty());
        assert!(!self.live.keys().any(|&(m, _)| m == mapper));
    }

    /// The invariants; with `walk`, also a `next_live` walk of every maptrack (linear in
    /// the handles ever used, so not after every step).
    fn check(&self, walk: bool) {
        // One pass over the live mappings: per entry, (read-only, writable, mappers seen).
        let mut counts = vec![[(0u32, 0u32, 0u8); GREFS as usize]; usize::from(DOMS)];
        let mut handles: Vec<Vec<u32>> = vec![Vec::new(); usize::from(DOMS)];
        for (&(mapper, h), m) in &self.live {
            let c = &mut counts[usize::from(m.granter)][m.gref as usize];
            if m.readonly {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
            c.2 |= 1 << mapper;
            handles[usize::from(mapper)].push(h);
        }
        for g in 0..DOMS {
            for gref in 0..GREFS {
                let (ro, rw, mappers) = counts[usize::from(g)][gref as usize];
                let flags = word_flags(self.words[usize::from(g)][gref as usize]);
                match self.active[usize::from(g)].get(gref) {
                    None => {
                        assert_eq!(ro + rw, 0, "mappings without an active entry");
                        assert_eq!(flags & (GTF_READING | GTF_WRITING), 0, "stale busy bits");
                    }
                    Some(a) => {
                        assert_eq!((a.ro_pins, a.rw_pins), (ro, rw), "pin counts drifted");
                        assert!(mappers == 0 || mappers == 1 << a.mapper, "foreign mapper");
                        assert_ne!(flags & GTF_READING, 0);
                        assert_eq!(flags & GTF_WRITING != 0, rw > 0);
                    }
                }
            }
        }
        for (d, mt) in self.maptrack.iter().enumerate() {
            let mine = &handles[d];
            assert_eq!(mt.len(), mine.len());
            for &h in mine {
                assert_eq!(mt.get(h).ok(), self.live.get(&(d as u16, h)));
            }
            if walk {
                let mut walked = Vec::with_capacity(mine.len());
                let mut h = 0;
                while let Some(n) = mt.next_live(h) {
                    walked.push(n);
                    h = n + 1;
                }
                assert_eq!(&walked, mine);
            }
        }
    }
}

fn check_pin_word(old: u32, new: u32, writable: bool) {
    assert_eq!(word_domid(new), word_domid(old), "pin changed the domid");
    let (o, n) = (word_flags(old), word_flags(new));
    assert_eq!(o & !n, 0, "pin cleared a bit");
    assert_ne!(n & GTF_READING, 0);
    assert_eq!(n & GTF_WRITING != 0, writable || o & GTF_WRITING != 0);
    assert_eq!(
        n & !(o | GTF_READING | GTF_WRITING),
        0,
        "pin set another bit"
    );
}

/// The grant-table target.
pub fn target_grant(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut w = World::new(&mut inp);
    let mut steps = 0u32;
    while !inp.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let d = inp.below(u32::from(DOMS)) as u16;
        match inp.u8() % 8 {
            0 => {
                // The granter (re)grants an entry: type, read-only, sub-page and grantee; the
                // busy bits stay as the hypervisor left them.
                let gref = inp.below(GREFS) as usize;
                let flags = inp.u16() & (3 | GTF_READONLY | GTF_SUB_PAGE | 0xe0);
                let flags = if inp.bool() { flags } else { GTF_PERMIT_ACCESS };
                let grantee = inp.below(u32::from(DOMS) + 1) as u16;
                let old = w.words[usize::from(d)][gref];
                let busy = word_flags(old) & (GTF_READING | GTF_WRITING);
                w.words[usize::from(d)][gref] = word(flags | busy, grantee);
            }
            1 | 2 => {
                let (g, gref, writable) = (
                    inp.below(u32::from(DOMS)) as u16,
                    inp.below(GREFS + 1),
                    inp.bool(),
                );
                if gref < GREFS {
                    w.map(d, g, gref, writable);
                }
            }
            3 | 4 => {
                let h = match inp.u8() {
                    0..=239 => u32::from(inp.u8() % 8),
                    _ => inp.u32(),
                };
                w.unmap(d, h);
            }
            5 => {
                // GNTTABOP_copy: argument rules, then a transient pin of a grant side.
                let (off, len) = (inp.u16(), inp.u16());
                assert_eq!(
                    copy_fits(off, len),
                    u32::from(off) + u32::from(len) <= COPY_PAGE
                );
                let (is_gref, u, domid) = (inp.bool(), inp.u64(), inp.pick(&[DOMID_SELF, d, 1]));
                match copy_side(is_gref, u, domid) {
                    Ok(CopySide::Gref { domid: got, gref }) => {
                        assert!(is_gref && got == domid && gref == u as u32);
                        let g = if domid == DOMID_SELF { d } else { domid };
                        let writable = inp.bool();
                        if gref < GREFS && g < DOMS && w.pin(g, gref, d, writable).is_some() {
                            w.unpin(g, gref, d, writable);
                        }
                    }
                    Ok(CopySide::Gmfn { gmfn }) => {
                        assert!(!is_gref && domid == DOMID_SELF && gmfn == u);
                    }
                    Err(e) => {
                        assert!(!is_gref && domid != DOMID_SELF);
                        assert_eq!(e, GNTST_PERMISSION_DENIED);
                    }
                }
            }
            6 => w.teardown(d),
            _ => {
                // The word transitions on arbitrary words.
                let (old, mapper, writable, check) = (inp.u32(), inp.u16(), inp.bool(), inp.bool());
                if let Ok(new) = pin_word(old, mapper, writable, check) {
                    check_pin_word(old, new, writable);
                    if check {
                        let f = word_flags(old);
                        assert_eq!(f & (3 | GTF_SUB_PAGE), GTF_PERMIT_ACCESS);
                        assert_eq!(word_domid(old), mapper);
                        assert!(!(writable && f & GTF_READONLY != 0));
                    }
                }
                let (cw, cr) = (inp.bool(), inp.bool());
                let new = unpin_word(old, cw, cr);
                assert_eq!(word_domid(new), word_domid(old));
                assert_eq!(word_flags(new) & !word_flags(old), 0);
            }
        }
        // The full check is linear in the live mappings: after every step while they are
        // few, then every 8th step.
        if steps < 16 || steps.is_multiple_of(8) {
            w.check(steps.is_multiple_of(16));
        }
    }
    w.check(true);
    for d in 0..DOMS {
        w.teardown(d);
    }
    w.check(true);
    assert!(
        w.active.iter().all(ActiveTable::is_empty),
        "pins left after teardown"
    );
}
