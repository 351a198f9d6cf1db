//! Guest-virtual to guest-physical translation, for hypercall arguments (which are guest
//! linear addresses) and diagnostics.
//!
//! Supports the modes a PVH guest passes through: paging off, 32-bit paging, PAE and
//! 4-level long-mode paging. Permission bits are not enforced (Xen does not apply SMAP or
//! user/supervisor checks to hypercall buffers); a non-present entry is a fault (`-EFAULT`),
//! never a page-in.
//!
//! Pure and `no_std`, without `unsafe`: the hypervisor supplies guest memory through
//! [`GuestPhysRead`], so every walk is tested on the host against a simulated memory.
//! Every table entry is guest-controlled: addresses are masked to 52 bits before use, so
//! no arithmetic on them can overflow, and a table outside guest RAM ends the walk.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

/// CR0.PG
const CR0_PG: u64 = 1 << 31;
/// CR4.PSE
const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE
const CR4_PAE: u64 = 1 << 5;
/// EFER.LMA
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const ADDR_52: u64 = 0x000f_ffff_ffff_f000;

/// The paging registers that decide a translation.
#[derive(Clone, Copy, Debug)]
pub struct PagingMode {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Reads guest-physical memory for the walker; None if the address is not guest RAM.
pub trait GuestPhysRead {
    /// The little-endian 8 bytes at `gpa`.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
    /// The little-endian 4 bytes at `gpa`.
    fn read_u32(&self, gpa: u64) -> Option<u32>;
}

/// Translates `gva`; None if unmapped (or a table lies outside guest memory).
pub fn translate(mode: &PagingMode, gva: u64, mem: &impl GuestPhysRead) -> Option<u64> {
    if mode.cr0 & CR0_PG == 0 {
        return Some(gva);
    }
    if mode.efer & EFER_LMA != 0 {
        // A non-canonical address (bits 63..47 not all equal, 4-level paging) faults on
        // the CPU; it must not alias the canonical address with the same low bits.
        let high = gva >> 47;
        if high != 0 && high != (1 << 17) - 1 {
            return None;
        }
        return walk_64(mode.cr3 & ADDR_52, gva, 4, mem);
    }
    let gva = gva & 0xffff_ffff;
    if mode.cr4 & CR4_PAE != 0 {
        let pdpte = mem.read_u64((mode.cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8)?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        return walk_64(pdpte & ADDR_52, gva, 2, mem);
    }
    let pde = u64::from(mem.read_u32((mode.cr3 & 0xffff_f000) + ((gva >> 22) & 0x3ff) * 4)?);
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & LARGE != 0 && mode.cr4 & CR4_PSE != 0 {
        // 4 MiB page: bits 31..22 from the PDE, bits 39..32 from PDE bits 20..13.
        let high = ((pde >> 13) & 0xff) << 32;
        return Some(high | (pde & 0xffc0_0000) | (gva & 0x3f_ffff));
    }
    let pte = u64::from(mem.read_u32((pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4)?);
    (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (gva & 0xfff))
}

/// Walks 64-bit-entry tables from `table` down `levels` levels (4 = PML4, 2 = PAE PD).
fn walk_64(mut table: u64, gva: u64, levels: u32, mem: &impl GuestPhysRead) -> Option<u64> {
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = mem.read_u64(table + ((gva >> shift) & 0x1ff) * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        if level > 1 && level < 4 && entry & LARGE != 0 {
            let size = 1u64 << shift;
            return Some((entry & ADDR_52 & !(size - 1)) | (gva & (size - 1)));
        }
        table = entry & ADDR_52;
    }
    Some(table | (gva & 0xfff))
}

/// One step of a long-mode walk, for diagnostics: the entry's guest-physical address and
/// its value (None if that address is not guest RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStep {
    pub level: u32,
    pub entry_gpa: u64,
    pub entry: Option<u64>,
}

/// The entries a 4-level walk of `gva` reads, top first, up to and including the one that
/// ends it (not present, a large page, outside guest RAM, or the 4 KiB leaf). For a crash
/// report: shows where a walk the guest's CPU failed goes wrong in memory.
pub fn trace_long(cr3: u64, gva: u64, mem: &impl GuestPhysRead) -> ([Option<WalkStep>; 4], usize) {
    let mut out = [None; 4];
    let mut table = cr3 & ADDR_52;
    for (i, level) in (1..=4u32).rev().enumerate() {
        let shift = 12 + 9 * (level - 1);
        let entry_gpa = table + ((gva >> shift) & 0x1ff) * 8;
        let entry = mem.read_u64(entry_gpa);
        out[i] = Some(WalkStep {
            level,
            entry_gpa,
            entry,
        });
        match entry {
            Some(e) if e & PRESENT != 0 && !(level > 1 && level < 4 && e & LARGE != 0) => {
                table = e & ADDR_52;
            }
            _ => return (out, i + 1),
        }
    }
    (out, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(HashMap<u64, u64>);

    impl GuestPhysRead for Mem {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            (gpa < 0x1000_0000).then(|| *self.0.get(&gpa).unwrap_or(&0))
        }
        fn read_u32(&self, gpa: u64) -> Option<u32> {
            self.read_u64(gpa).map(|v| v as u32)
        }
    }

    const LONG: PagingMode = PagingMode {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    #[test]
    fn paging_off_is_identity() {
        let m = PagingMode {
            cr0: 1,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
        assert_eq!(
            translate(&m, 0xdead_beef, &Mem::default()),
            Some(0xdead_beef)
        );
    }

    #[test]
    fn long_mode_4k_2m_1g() {
        let mut mem = Mem::default();
        let va: u64 = 0xffff_8000_1234_5678;
        let (l4, l3, l2) = ((va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511);
        mem.0.insert(0x1000 + l4 * 8, 0x2000 | 3);
        mem.0.insert(0x2000 + l3 * 8, 0x3000 | 3);
        mem.0.insert(0x3000 + l2 * 8, 0x4000 | 3);
        mem.0.insert(0x4000 + ((va >> 12) & 511) * 8, 0x77_7000 | 3);
        assert_eq!(translate(&LONG, va, &mem), Some(0x77_7678));
        mem.0.insert(0x3000 + l2 * 8, 0x60_0000 | 0x83);
        assert_eq!(
            translate(&LONG, va, &mem),
            Some(0x60_0000 | (va & 0x1f_ffff))
        );
        mem.0.insert(0x2000 + l3 * 8, 0x4000_0000 | 0x83);
        assert_eq!(
            translate(&LONG, va, &mem),
            Some(0x4000_0000 | (va & 0x3fff_ffff))
        );
    }

    #[test]
    fn not_present_and_outside_memory_fail() {
        let mut mem = Mem::default();
        assert_eq!(translate(&LONG, 0x1000, &mem), None);
        mem.0.insert(0x1000, 0x2000_0000 | 3); // table beyond guest memory
        assert_eq!(translate(&LONG, 0x1000, &mem), None);
    }

    #[test]
    fn pae_and_legacy_32bit() {
        let mut mem = Mem::default();
        let pae = PagingMode {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: 0,
        };
        mem.0.insert(0x1000 + 3 * 8, 0x2000 | 1);
        mem.0.insert(
            0x2000 + ((0xc040_0000u64 >> 21) & 511) * 8,
            0x80_0000 | 0x83,
        );
        assert_eq!(translate(&pae, 0xc041_2345, &mem), Some(0x81_2345));

        let legacy = PagingMode {
            cr0: CR0_PG | 1,
            cr3: 0x5000,
            cr4: CR4_PSE,
            efer: 0,
        };
        mem.0.insert(0x5000 + 0x300 * 4, 0x40_0000 | 0x83);
        assert_eq!(translate(&legacy, 0xc012_3456, &mem), Some(0x52_3456));
        mem.0.insert(0x5000 + 0x301 * 4, 0x6000 | 3);
        mem.0.insert(0x6000 + 2 * 4, 0x9000 | 3);
        assert_eq!(translate(&legacy, 0xc040_2abc, &mem), Some(0x9abc));
    }

    #[test]
    fn trace_stops_where_the_walk_ends() {
        let mut mem = Mem::default();
        let va: u64 = 0xffff_8000_1234_5678;
        let (l4, l3) = ((va >> 39) & 511, (va >> 30) & 511);
        mem.0.insert(0x1000 + l4 * 8, 0x2000 | 3);
        let (steps, n) = trace_long(0x1000, va, &mem);
        assert_eq!(n, 2, "the zero L3 entry ends it");
        assert_eq!(
            steps[1],
            Some(WalkStep {
                level: 3,
                entry_gpa: 0x2000 + l3 * 8,
                entry: Some(0)
            })
        );
        mem.0.insert(0x2000 + l3 * 8, 0x4000_0000 | 0x83);
        assert_eq!(trace_long(0x1000, va, &mem).1, 2, "a 1 GiB page ends it");
        mem.0.insert(0x2000 + l3 * 8, 0x3000 | 3);
        mem.0
            .insert(0x3000 + ((va >> 21) & 511) * 8, 0x2000_0000 | 3);
        let (steps, n) = trace_long(0x1000, va, &mem);
        assert_eq!(n, 4, "the leaf is read from outside memory");
        assert_eq!(steps[3].unwrap().entry, None);
    }
}
