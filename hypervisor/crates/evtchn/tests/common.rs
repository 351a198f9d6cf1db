#![allow(dead_code)]

use evtchn::{Caller, Config, Registry, VecBits};

pub const DOM0: Caller = Caller::new(0, true);
pub const DOMU: Caller = Caller::new(1, false);
pub const DOMU2: Caller = Caller::new(2, false);

/// dom0 (privileged, 4 vCPUs), dom1 and dom2 (2 vCPUs each); all ports unmasked.
pub fn registry() -> Registry<VecBits> {
    let mut r = Registry::new();
    r.add(0, Config::new(4), VecBits::new(4)).unwrap();
    r.add(1, Config::new(2), VecBits::new(2)).unwrap();
    r.add(2, Config::new(2), VecBits::new(2)).unwrap();
    r
}

pub fn bits(r: &Registry<VecBits>, dom: u16) -> &VecBits {
    &r.get(dom).unwrap().bits
}

pub fn bits_mut(r: &mut Registry<VecBits>, dom: u16) -> &mut VecBits {
    &mut r.get_mut(dom).unwrap().bits
}

// ---- FIFO ABI guest side --------------------------------------------------------------

use evtchn::{EventChannels, SharedBits, FIFO_HEAD_OFFSET};

pub const F_PENDING: u32 = 1 << 31;
pub const F_MASKED: u32 = 1 << 30;
pub const F_LINKED: u32 = 1 << 29;
pub const F_BUSY: u32 = 1 << 28;
pub const F_LINK: u32 = (1 << 17) - 1;

/// GFN of vCPU `v`'s control-block page in the tests (`0x100 + v`), of event-array page `i`
/// (`0x200 + i`).
pub fn cb_gfn(v: u32) -> u64 {
    0x100 + u64::from(v)
}
pub fn array_gfn(i: u32) -> u64 {
    0x200 + u64::from(i)
}

/// Guest: switches `dom` to FIFO as Linux does (a control block per vCPU at offset 0 of its
/// own page, then `pages` event-array pages).
pub fn fifo_init(r: &mut Registry<VecBits>, dom: u16, pages: u32) {
    let c = Caller::new(dom, dom == 0);
    let nv = r.get(dom).unwrap().evtchn.max_vcpus();
    for v in 0..nv {
        bits_mut(r, dom).add_ram(cb_gfn(v));
        assert_eq!(r.init_control(c, v, cb_gfn(v), 0), Ok(17));
    }
    for i in 0..pages {
        bits_mut(r, dom).add_ram(array_gfn(i));
        r.expand_array(c, array_gfn(i)).unwrap();
    }
}

/// A Linux-like FIFO consumer for one domain: per-vCPU cached heads.
#[derive(Default, Clone)]
pub struct Consumer {
    pub heads: Vec<[u32; 16]>,
}

impl Consumer {
    pub fn new(nr_vcpus: u32) -> Self {
        Consumer {
            heads: vec![[0; 16]; nr_vcpus as usize],
        }
    }

    /// Drains vCPU `v`'s queues (Linux's `__evtchn_fifo_handle_events`): returns the
    /// (port, priority) of every event handled, clearing PENDING as a handler would.
    /// `limit` bounds the work (a hostile hypervisor could build a loop; ours must not).
    pub fn drain(
        &mut self,
        t: &EventChannels,
        b: &mut VecBits,
        v: u32,
        limit: usize,
    ) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let Some(cb) = t.fifo_control_block(v) else {
            return out;
        };
        b.guest_take_upcall(v);
        let take_ready = |b: &mut VecBits| {
            let r = b.peek_u32(cb).unwrap();
            b.poke_u32(cb, 0);
            r
        };
        let mut ready = take_ready(b);
        let mut steps = 0;
        while ready != 0 {
            steps += 1;
            assert!(steps <= limit, "queue walk did not end");
            let q = ready.trailing_zeros();
            let mut head = self.heads[v as usize][q as usize];
            if head == 0 {
                head = b
                    .peek_u32(cb + FIFO_HEAD_OFFSET + 4 * u64::from(q))
                    .unwrap();
            }
            let port = head;
            let next = match t.fifo_word_gpa(port) {
                Some(w) => {
                    let old = b.peek_u32(w).unwrap();
                    b.poke_u32(w, old & !(F_LINKED | F_LINK));
                    old & F_LINK
                }
                None => 0,
            };
            if next == 0 {
                ready &= !(1 << q);
            }
            if let Some(w) = t.fifo_word_gpa(port) {
                let x = b.peek_u32(w).unwrap();
                if x & F_PENDING != 0 && x & F_MASKED == 0 {
                    b.poke_u32(w, x & !F_PENDING);
                    out.push((port, q));
                }
            }
            self.heads[v as usize][q as usize] = next;
            ready |= take_ready(b);
        }
        out
    }
}

/// The event word of `port`.
pub fn word(r: &Registry<VecBits>, dom: u16, port: u32) -> u32 {
    let d = r.get(dom).unwrap();
    let gpa = d.evtchn.fifo_word_gpa(port).expect("port has a word");
    d.bits.load_u32(gpa).unwrap()
}

/// Guest: sets or clears MASKED of `port` directly.
pub fn fifo_mask(r: &mut Registry<VecBits>, dom: u16, port: u32, masked: bool) {
    let gpa = r.get(dom).unwrap().evtchn.fifo_word_gpa(port).unwrap();
    let b = bits_mut(r, dom);
    if masked {
        b.fetch_or_u32(gpa, F_MASKED);
    } else {
        b.fetch_and_u32(gpa, !F_MASKED);
    }
}
