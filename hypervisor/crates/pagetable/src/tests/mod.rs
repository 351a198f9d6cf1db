//! Host tests with a fake physical memory and a counting frame source.
//!
//! The fake is strict: touching a frame that was never allocated (or already freed) panics, new
//! frames are filled with garbage to prove the engine clears them, and double frees panic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::*;

mod encoding;
mod kinds;
mod operations;

const GARBAGE: u64 = 0xdead_beef_dead_beef;
const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

#[derive(Default)]
struct Sim {
    tables: HashMap<u64, Box<[u64; ENTRIES]>>,
    next: u64,
    /// Allocations still allowed; `None` means unlimited.
    budget: Option<usize>,
}

#[derive(Clone)]
struct Mem(Rc<RefCell<Sim>>);
struct Frames(Rc<RefCell<Sim>>);

impl PhysMem for Mem {
    fn read_entry(&self, table: u64, index: usize) -> u64 {
        let sim = self.0.borrow();
        let t = sim.tables.get(&table);
        t.unwrap_or_else(|| panic!("read of non-table frame {table:#x}"))[index]
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        let mut sim = self.0.borrow_mut();
        let t = sim.tables.get_mut(&table);
        t.unwrap_or_else(|| panic!("write to non-table frame {table:#x}"))[index] = value;
    }
}

impl FrameSource for Frames {
    fn alloc_table(&mut self) -> Option<u64> {
        let mut sim = self.0.borrow_mut();
        if let Some(budget) = sim.budget.as_mut() {
            *budget = budget.checked_sub(1)?;
        }
        sim.next += K4;
        let phys = 0x10_0000_0000 + sim.next; // well away from the addresses tests map
        sim.tables.insert(phys, Box::new([GARBAGE; ENTRIES]));
        Some(phys)
    }

    fn free_table(&mut self, table: u64) {
        let removed = self.0.borrow_mut().tables.remove(&table);
        assert!(removed.is_some(), "double free of {table:#x}");
    }
}

struct Env<F: Format> {
    mem: Mem,
    frames: Frames,
    pt: PageTable<F>,
}

impl<F: Format> Env<F> {
    fn new() -> Self {
        let sim = Rc::new(RefCell::new(Sim::default()));
        let mut mem = Mem(sim.clone());
        let mut frames = Frames(sim);
        let pt = PageTable::new(&mut mem, &mut frames).unwrap();
        Env { mem, frames, pt }
    }

    fn live_tables(&self) -> usize {
        self.mem.0.borrow().tables.len()
    }

    fn set_budget(&self, budget: Option<usize>) {
        self.mem.0.borrow_mut().budget = budget;
    }

    fn map(&mut self, addr: u64, phys: u64, size: PageSize, perm: Perm) -> Result<(), MapError> {
        self.map_mt(addr, phys, size, perm, MemType::WriteBack)
    }

    fn map_mt(
        &mut self,
        addr: u64,
        phys: u64,
        size: PageSize,
        perm: Perm,
        mt: MemType,
    ) -> Result<(), MapError> {
        let (mem, frames) = (&mut self.mem, &mut self.frames);
        self.pt.map(mem, frames, addr, phys, size, perm, mt)
    }

    fn map_range(&mut self, addr: u64, phys: u64, len: u64, max: PageSize) -> Result<(), MapError> {
        let (mem, frames) = (&mut self.mem, &mut self.frames);
        let (perm, mt) = (Perm::RW, MemType::WriteBack);
        self.pt
            .map_range(mem, frames, addr, phys, len, perm, mt, max)
    }

    fn unmap(&mut self, addr: u64, size: PageSize) -> Result<Translation, MapError> {
        self.pt.unmap(&mut self.mem, &mut self.frames, addr, size)
    }

    fn unmap_range(&mut self, addr: u64, len: u64) -> Result<u64, MapError> {
        self.pt
            .unmap_range(&mut self.mem, &mut self.frames, addr, len)
    }

    fn protect(&mut self, addr: u64, len: u64, perm: Perm) -> Result<(), MapError> {
        self.pt
            .protect(&mut self.mem, &mut self.frames, addr, len, perm)
    }

    fn translate(&self, addr: u64) -> Option<Translation> {
        self.pt.translate(&self.mem, addr)
    }

    fn leaves(&self) -> BTreeMap<u64, Translation> {
        let mut out = BTreeMap::new();
        self.pt.for_each_leaf(&self.mem, |addr, t| {
            assert!(
                out.insert(addr, t).is_none(),
                "leaf {addr:#x} visited twice"
            );
        });
        out
    }

    /// Raw entry at `level` on the path to `addr` (panics if the path is shorter).
    fn raw(&self, addr: u64, level: u8) -> u64 {
        let mut table = self.pt.root();
        for l in (level..=4).rev() {
            let entry = self.mem.read_entry(table, index(addr, l));
            if l == level {
                return entry;
            }
            table = entry & ADDR_MASK;
        }
        unreachable!()
    }

    fn new_root_fails(&mut self) -> Result<(), MapError> {
        PageTable::<F>::new(&mut self.mem, &mut self.frames).map(|_| ())
    }

    fn destroy(self) -> usize {
        let Env {
            mut mem,
            mut frames,
            pt,
        } = self;
        pt.destroy(&mut mem, &mut frames);
        let live = mem.0.borrow().tables.len();
        live
    }
}
