//! A small ELF writer for tests: emits ELF64 or ELF32 images with `PT_LOAD` and `PT_NOTE`
//! program headers.

extern crate std;

use std::vec::Vec;

use crate::ElfClass;

/// Offsets of program-header fields, for tests that corrupt them.
#[derive(Clone, Copy, Debug)]
pub enum PhField {
    Type,
    Offset,
    Paddr,
    Filesz,
    Memsz,
}

pub struct LoadSpec {
    pub paddr: u64,
    pub vaddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    pub flags: u32,
}

pub struct NoteSpec {
    pub name: Vec<u8>,
    pub ty: u32,
    pub desc: Vec<u8>,
}

pub struct ElfBuilder {
    pub class: ElfClass,
    pub e_type: u16,
    pub machine: u16,
    pub loads: Vec<LoadSpec>,
    pub notes: Vec<NoteSpec>,
    /// Extra bytes appended after everything (e.g. Linux's relocation table).
    pub trailer: Vec<u8>,
}

impl ElfBuilder {
    pub fn new(class: ElfClass) -> Self {
        Self {
            class,
            e_type: 2,
            machine: match class {
                ElfClass::Elf32 => 3,
                ElfClass::Elf64 => 62,
            },
            loads: Vec::new(),
            notes: Vec::new(),
            trailer: Vec::new(),
        }
    }

    pub fn load(mut self, paddr: u64, data: &[u8], memsz: u64, flags: u32) -> Self {
        self.loads.push(LoadSpec {
            paddr,
            vaddr: paddr,
            data: data.to_vec(),
            memsz,
            flags,
        });
        self
    }

    pub fn note(mut self, name: &[u8], ty: u32, desc: &[u8]) -> Self {
        self.notes.push(NoteSpec {
            name: name.to_vec(),
            ty,
            desc: desc.to_vec(),
        });
        self
    }

    pub fn xen_note(self, ty: u32, desc: &[u8]) -> Self {
        self.note(b"Xen\0", ty, desc)
    }

    fn ehdr_size(&self) -> usize {
        match self.class {
            ElfClass::Elf32 => 52,
            ElfClass::Elf64 => 64,
        }
    }

    pub fn phdr_size(class: ElfClass) -> usize {
        match class {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 56,
        }
    }

    /// File offset of program header `i`.
    pub fn phdr_offset(&self, i: usize) -> usize {
        self.ehdr_size() + i * Self::phdr_size(self.class)
    }

    pub fn phnum(&self) -> usize {
        self.loads.len() + usize::from(!self.notes.is_empty())
    }

    pub fn build(&self) -> Vec<u8> {
        let c64 = self.class == ElfClass::Elf64;
        let ph_off = self.ehdr_size();
        let mut out = std::vec![0u8; ph_off + self.phnum() * Self::phdr_size(self.class)];

        // Note segment contents.
        let mut note_bytes = Vec::new();
        for n in &self.notes {
            note_bytes.extend_from_slice(&(n.name.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&n.ty.to_le_bytes());
            note_bytes.extend_from_slice(&n.name);
            pad4(&mut note_bytes);
            note_bytes.extend_from_slice(&n.desc);
            pad4(&mut note_bytes);
        }

        // Header.
        out[0..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
        out[4] = if c64 { 2 } else { 1 };
        out[5] = 1;
        out[6] = 1;
        put16(&mut out, 16, self.e_type);
        put16(&mut out, 18, self.machine);
        put32(&mut out, 20, 1);
        if c64 {
            put64(&mut out, 32, ph_off as u64);
            put16(&mut out, 52, 64);
            put16(&mut out, 54, 56);
            put16(&mut out, 56, self.phnum() as u16);
        } else {
            put32(&mut out, 28, ph_off as u32);
            put16(&mut out, 40, 52);
            put16(&mut out, 42, 32);
            put16(&mut out, 44, self.phnum() as u16);
        }

        let mut phdrs: Vec<(u32, u32, u64, u64, u64, u64, u64)> = Vec::new();
        for l in &self.loads {
            align(&mut out, 16);
            let off = out.len() as u64;
            out.extend_from_slice(&l.data);
            phdrs.push((
                1,
                l.flags,
                off,
                l.vaddr,
                l.paddr,
                l.data.len() as u64,
                l.memsz,
            ));
        }
        if !self.notes.is_empty() {
            align(&mut out, 4);
            let off = out.len() as u64;
            out.extend_from_slice(&note_bytes);
            phdrs.push((4, 4, off, 0, 0, note_bytes.len() as u64, 0));
        }
        for (i, &(ty, flags, off, vaddr, paddr, filesz, memsz)) in phdrs.iter().enumerate() {
            let b = self.phdr_offset(i);
            put32(&mut out, b, ty);
            if c64 {
                put32(&mut out, b + 4, flags);
                put64(&mut out, b + 8, off);
                put64(&mut out, b + 16, vaddr);
                put64(&mut out, b + 24, paddr);
                put64(&mut out, b + 32, filesz);
                put64(&mut out, b + 40, memsz);
                put64(&mut out, b + 48, 4);
            } else {
                put32(&mut out, b + 4, off as u32);
                put32(&mut out, b + 8, vaddr as u32);
                put32(&mut out, b + 12, paddr as u32);
                put32(&mut out, b + 16, filesz as u32);
                put32(&mut out, b + 20, memsz as u32);
                put32(&mut out, b + 24, flags);
                put32(&mut out, b + 28, 4);
            }
        }
        out.extend_from_slice(&self.trailer);
        out
    }

    /// Overwrites one field of program header `i` in a built image.
    pub fn set_phdr(&self, img: &mut [u8], i: usize, field: PhField, value: u64) {
        let b = self.phdr_offset(i);
        let c64 = self.class == ElfClass::Elf64;
        let (off, wide) = match (field, c64) {
            (PhField::Type, _) => (0, false),
            (PhField::Offset, true) => (8, true),
            (PhField::Paddr, true) => (24, true),
            (PhField::Filesz, true) => (32, true),
            (PhField::Memsz, true) => (40, true),
            (PhField::Offset, false) => (4, false),
            (PhField::Paddr, false) => (12, false),
            (PhField::Filesz, false) => (16, false),
            (PhField::Memsz, false) => (20, false),
        };
        if wide {
            put64(img, b + off, value);
        } else {
            put32(img, b + off, value as u32);
        }
    }
}

fn pad4(v: &mut Vec<u8>) {
    align(v, 4);
}
fn align(v: &mut Vec<u8>, a: usize) {
    while !v.len().is_multiple_of(a) {
        v.push(0);
    }
}
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
