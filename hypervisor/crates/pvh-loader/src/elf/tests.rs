extern crate std;

use std::format;
use std::vec::Vec;

use xen_abi::elfnote::*;

use super::*;
use crate::testutil::{put16, put32, put64, ElfBuilder, PhField};
use crate::ImageFormat;

const TEXT: &[u8] = &[0x90; 0x40];
const DATA: &[u8] = &[0xaa; 0x20];

/// A Linux-like PVH image: text at 16 MiB (R X) with the entry inside it, data with a BSS
/// tail, and a note segment with several Xen notes plus a foreign note.
fn linux_like(class: ElfClass) -> ElfBuilder {
    ElfBuilder::new(class)
        .load(0x100_0000, TEXT, 0x40, 5)
        .load(0x120_0000, DATA, 0x1000, 6)
        .note(b"GNU\0", 3, &[1, 2, 3, 4])
        .xen_note(XEN_ELFNOTE_GUEST_OS, b"linux\0")
        .xen_note(
            XEN_ELFNOTE_VIRT_BASE,
            &0xffff_ffff_8000_0000u64.to_le_bytes(),
        )
        .xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &0x8801u32.to_le_bytes())
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0010u32.to_le_bytes())
}

#[test]
fn valid_elf64_pvh() {
    let b = linux_like(ElfClass::Elf64);
    let img = b.build();
    assert_eq!(ImageFormat::detect(&img), ImageFormat::Elf);
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.class, ElfClass::Elf64);
    assert_eq!(p.entry, 0x100_0010);
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.lowest_paddr, 0x100_0000);
    assert_eq!(p.highest_paddr_end, 0x120_1000);
    let s1 = p.segments[1];
    assert_eq!(
        (s1.paddr, s1.filesz, s1.memsz, s1.flags, s1.index),
        (0x120_0000, 0x20, 0x1000, 6, 1)
    );
    assert_eq!(p.segment_data(&p.segments[0]), TEXT);
    // The GNU note is not a Xen note.
    assert_eq!(p.notes.len(), 4);
    assert_eq!(p.guest_os(), Some("linux"));
    assert_eq!(p.virt_base(), Some(0xffff_ffff_8000_0000));
    assert_eq!(p.supported_features(), Some(0x8801));
    assert!(p.dom0_capable());
    assert_eq!(p.hypercall_page(), None);
    assert_eq!(
        p.note(XEN_ELFNOTE_PHYS32_ENTRY).unwrap().name(),
        Some("PHYS32_ENTRY")
    );
}

#[test]
fn valid_elf32_pvh() {
    let img = linux_like(ElfClass::Elf32).build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.class, ElfClass::Elf32);
    assert_eq!(p.entry, 0x100_0010);
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.highest_paddr_end, 0x120_1000);
    assert_eq!(p.segment_data(&p.segments[1]), DATA);
    assert_eq!(p.guest_os(), Some("linux"));
}

#[test]
fn eight_byte_entry_note_as_linux_emits() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0020u64.to_le_bytes())
        .xen_note(
            XEN_ELFNOTE_HYPERCALL_PAGE,
            &0xffff_ffff_8100_1000u64.to_le_bytes(),
        )
        .build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.entry, 0x100_0020);
    assert_eq!(p.hypercall_page(), Some(0xffff_ffff_8100_1000));
    // No SUPPORTED_FEATURES note: Xen builds it as dom0.
    assert_eq!(p.supported_features(), None);
    assert!(p.dom0_capable());
}

#[test]
fn missing_pvh_note() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .xen_note(XEN_ELFNOTE_ENTRY, &0xffff_ffff_8100_0000u64.to_le_bytes())
        .build();
    let err = parse_pvh(&img).unwrap_err();
    assert_eq!(err, LoadError::NoPvhNote);
    assert_eq!(
        format!("{err}"),
        "kernel has no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel"
    );
    // No note segment at all.
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .build();
    assert_eq!(parse_pvh(&img), Err(LoadError::NoPvhNote));
    // Notes in a segment that is not PT_NOTE are not looked at.
    let b = linux_like(ElfClass::Elf64);
    let mut img = b.build();
    b.set_phdr(&mut img, 2, PhField::Type, 0x6474_e551);
    assert_eq!(parse_pvh(&img), Err(LoadError::NoPvhNote));
}

#[test]
fn foreign_owner_type_18_is_not_pvh() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .note(
            b"Linux\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x100_0000u32.to_le_bytes(),
        )
        .build();
    assert_eq!(parse_pvh(&img), Err(LoadError::NoPvhNote));
}

fn check_every_prefix(class: ElfClass) {
    let img = linux_like(class).build();
    assert!(parse_pvh(&img).is_ok());
    for cut in 0..img.len() {
        let r = parse_pvh(&img[..cut]);
        let err = r.expect_err("a truncated image must not parse");
        assert!(!format!("{err}").is_empty());
    }
}

#[test]
fn every_truncation_errors_elf64() {
    check_every_prefix(ElfClass::Elf64);
}

#[test]
fn every_truncation_errors_elf32() {
    check_every_prefix(ElfClass::Elf32);
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut b = linux_like(ElfClass::Elf64);
    b.trailer = std::vec![0x55; 100];
    assert_eq!(parse_pvh(&b.build()).unwrap().entry, 0x100_0010);
}

#[test]
fn segment_beyond_file() {
    let b = linux_like(ElfClass::Elf64);
    let mut img = b.build();
    let len = img.len();
    b.set_phdr(&mut img, 1, PhField::Filesz, len as u64);
    match parse_pvh(&img) {
        Err(LoadError::SegmentOutOfFile {
            index: 1,
            filesz,
            file_len,
            ..
        }) => {
            assert_eq!((filesz, file_len), (len as u64, len));
        }
        other => panic!("{other:?}"),
    }
    let mut img = b.build();
    b.set_phdr(&mut img, 0, PhField::Offset, 0x1_0000_0000);
    assert!(matches!(
        parse_pvh(&img),
        Err(LoadError::SegmentOutOfFile { index: 0, .. })
    ));
}

#[test]
fn overflowing_offset_plus_filesz() {
    let b = linux_like(ElfClass::Elf64);
    let mut img = b.build();
    b.set_phdr(&mut img, 0, PhField::Offset, u64::MAX - 8);
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::SegmentOffsetOverflow {
            index: 0,
            offset: u64::MAX - 8,
            filesz: 0x40
        })
    );
    // Same for the note segment.
    let mut img = b.build();
    b.set_phdr(&mut img, 2, PhField::Filesz, u64::MAX);
    assert!(matches!(
        parse_pvh(&img),
        Err(LoadError::SegmentOffsetOverflow { index: 2, .. })
    ));
}

#[test]
fn overflowing_paddr_plus_memsz() {
    let b = linux_like(ElfClass::Elf64);
    let mut img = b.build();
    b.set_phdr(&mut img, 1, PhField::Paddr, u64::MAX - 0x10);
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::SegmentAddressOverflow {
            index: 1,
            paddr: u64::MAX - 0x10,
            memsz: 0x1000
        })
    );
}

#[test]
fn filesz_larger_than_memsz() {
    let b = linux_like(ElfClass::Elf32);
    let mut img = b.build();
    b.set_phdr(&mut img, 0, PhField::Memsz, 0x10);
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::FileszExceedsMemsz {
            index: 0,
            filesz: 0x40,
            memsz: 0x10
        })
    );
}

#[test]
fn overlapping_segments() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x2000, 5)
        .load(0x100_1000, DATA, 0x20, 6)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0000u32.to_le_bytes())
        .build();
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::OverlappingSegments {
            first: 0,
            second: 1,
            paddr: 0x100_1000
        })
    );
    // Adjacent is fine.
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x1000, 5)
        .load(0x100_1000, DATA, 0x20, 6)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0000u32.to_le_bytes())
        .build();
    assert!(parse_pvh(&img).is_ok());
}

#[test]
fn entry_outside_segments() {
    for entry in [0x00ff_ffff_u32, 0x100_0040, 0x120_1000, u32::MAX] {
        let img = ElfBuilder::new(ElfClass::Elf64)
            .load(0x100_0000, TEXT, 0x40, 5)
            .load(0x120_0000, DATA, 0x1000, 6)
            .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &entry.to_le_bytes())
            .build();
        assert_eq!(
            parse_pvh(&img),
            Err(LoadError::EntryOutsideSegments { entry })
        );
    }
}

#[test]
fn bad_entry_notes() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &[0, 0])
        .build();
    assert_eq!(parse_pvh(&img), Err(LoadError::BadEntryNoteSize { len: 2 }));
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x100_0000, TEXT, 0x40, 5)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x1_0100_0000u64.to_le_bytes())
        .build();
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::EntryNot32Bit {
            entry: 0x1_0100_0000
        })
    );
}

#[test]
fn bad_magic_class_endianness_version() {
    let good = linux_like(ElfClass::Elf64).build();
    let mut img = good.clone();
    img[0] = 0x7e;
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::BadMagic {
            found: [0x7e, b'E', b'L', b'F']
        })
    );
    assert_eq!(ImageFormat::detect(&img), ImageFormat::Unknown);
    let mut img = good.clone();
    img[4] = 3;
    assert_eq!(parse_pvh(&img), Err(LoadError::BadClass { class: 3 }));
    let mut img = good.clone();
    img[5] = 2;
    assert_eq!(parse_pvh(&img), Err(LoadError::BadEndianness { data: 2 }));
    let mut img = good.clone();
    img[6] = 0;
    assert_eq!(parse_pvh(&img), Err(LoadError::BadVersion { version: 0 }));
    let mut img = good;
    put32(&mut img, 20, 7);
    assert_eq!(parse_pvh(&img), Err(LoadError::BadVersion { version: 7 }));
    assert_eq!(
        parse_pvh(b"MZ"),
        Err(LoadError::TooShort { len: 2, needed: 16 })
    );
}

/// Every class/machine pairing: the class only selects the header layout, and either x86
/// machine loads with either class, as Xen's PVH loader allows (an ELF32 file with machine
/// x86-64 is what `objcopy -O elf32-x86-64` makes of a 64-bit kernel); other machines are
/// refused whatever the class.
#[test]
fn class_and_machine_are_checked_separately() {
    const EM_ARM: u16 = 40;
    const EM_AARCH64: u16 = 183;
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        for machine in [3, 62] {
            let mut b = linux_like(class);
            b.machine = machine;
            let img = b.build();
            let parsed = parse_pvh(&img).unwrap_or_else(|e| panic!("{class:?}/{machine}: {e}"));
            assert_eq!(parsed.class, class);
            assert_eq!(parsed.entry, 0x100_0010);
            assert_eq!(parsed.segments.len(), 2);
        }
        for machine in [0, EM_ARM, EM_AARCH64, 0xffff] {
            let mut b = linux_like(class);
            b.machine = machine;
            assert_eq!(
                parse_pvh(&b.build()),
                Err(LoadError::BadMachine { class, machine }),
                "{class:?}/{machine}"
            );
        }
    }
    for class in [0, 3, 0xff] {
        let mut img = linux_like(ElfClass::Elf64).build();
        img[4] = class;
        assert_eq!(parse_pvh(&img), Err(LoadError::BadClass { class }));
    }
}

/// Which images may become dom0: no SUPPORTED_FEATURES note, or notes whose OR has
/// XENFEAT_dom0 (bit 11); a note without it (of any descriptor size) refuses.
#[test]
fn dom0_capability_follows_the_features_notes() {
    let base = || {
        ElfBuilder::new(ElfClass::Elf64)
            .load(0x100_0000, TEXT, 0x40, 5)
            .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0010u32.to_le_bytes())
    };
    assert!(parse_pvh(&base().build()).unwrap().dom0_capable());
    let img = base()
        .xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &0x0100u32.to_le_bytes())
        .build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.supported_features(), Some(0x100));
    assert!(!p.dom0_capable());
    // Two notes are OR-ed (a test guest adds a dom0 note beside the runtime's own).
    let img = base()
        .xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &0u32.to_le_bytes())
        .xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &0x800u32.to_le_bytes())
        .build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.supported_features(), Some(0x800));
    assert!(p.dom0_capable());
    // A descriptor that is not whole u32s counts as present with no features (as Xen's
    // numeric-array read), so even bit 11 in a two-byte one refuses; so does an empty one.
    let img = base()
        .xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &0x800u16.to_le_bytes())
        .build();
    assert!(!parse_pvh(&img).unwrap().dom0_capable());
    let img = base()
        .xen_note(
            XEN_ELFNOTE_SUPPORTED_FEATURES,
            &0x8_0000_0800u64.to_le_bytes(),
        )
        .build();
    assert_eq!(parse_pvh(&img).unwrap().supported_features(), Some(0x800));
    let img = base().xen_note(XEN_ELFNOTE_SUPPORTED_FEATURES, &[]).build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.supported_features(), Some(0));
    assert!(!p.dom0_capable());
}

#[test]
fn wrong_type() {
    let mut b = linux_like(ElfClass::Elf64);
    b.e_type = 3;
    assert_eq!(parse_pvh(&b.build()), Err(LoadError::BadType { e_type: 3 }));
}

#[test]
fn bad_program_header_table() {
    let good = linux_like(ElfClass::Elf64).build();
    let mut img = good.clone();
    put16(&mut img, 54, 40);
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::BadPhentsize {
            phentsize: 40,
            expected: 56
        })
    );
    let mut img = good.clone();
    put64(&mut img, 32, u64::MAX - 4);
    assert!(
        matches!(parse_pvh(&img), Err(LoadError::PhdrsOutOfFile { phoff, phnum: 3, .. }) if phoff == u64::MAX - 4)
    );
    let mut img = good;
    put16(&mut img, 56, u16::MAX);
    assert!(matches!(
        parse_pvh(&img),
        Err(LoadError::PhdrsOutOfFile {
            phnum: u16::MAX,
            ..
        })
    ));
}

#[test]
fn malformed_notes() {
    let b = linux_like(ElfClass::Elf64);
    let good = b.build();
    // File offset of the note segment = offset of the first note (the GNU one).
    let note_off = good.len() - note_segment_len(&b);
    // Huge descsz in the first note.
    let mut img = good.clone();
    put32(&mut img, note_off + 4, u32::MAX);
    assert_eq!(
        parse_pvh(&img),
        Err(LoadError::MalformedNote {
            index: 2,
            offset: note_off as u64
        })
    );
    // Huge namesz.
    let mut img = good.clone();
    put32(&mut img, note_off, 0xffff_fff0);
    assert!(matches!(
        parse_pvh(&img),
        Err(LoadError::MalformedNote { index: 2, .. })
    ));
    // A note segment too short for a note header.
    let mut img = good;
    b.set_phdr(&mut img, 2, PhField::Filesz, 6);
    assert!(matches!(
        parse_pvh(&img),
        Err(LoadError::MalformedNote { index: 2, .. })
    ));
}

fn note_segment_len(b: &ElfBuilder) -> usize {
    b.notes
        .iter()
        .map(|n| 12 + n.name.len().next_multiple_of(4) + n.desc.len().next_multiple_of(4))
        .sum()
}

#[test]
fn no_load_segments() {
    let img = ElfBuilder::new(ElfClass::Elf64)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0000u32.to_le_bytes())
        .build();
    assert_eq!(parse_pvh(&img), Err(LoadError::NoLoadSegments));
    // A zero-sized PT_LOAD is skipped.
    let img = ElfBuilder::new(ElfClass::Elf64)
        .load(0x200_0000, &[], 0, 4)
        .load(0x100_0000, TEXT, 0x40, 5)
        .xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0000u32.to_le_bytes())
        .build();
    let p = parse_pvh(&img).unwrap();
    assert_eq!(p.segments.len(), 1);
    assert_eq!(p.segments[0].index, 1);
}

#[test]
fn too_many_segments_and_notes() {
    let mut b = ElfBuilder::new(ElfClass::Elf64);
    for i in 0..=MAX_SEGMENTS as u64 {
        b = b.load(0x100_0000 + i * 0x1000, &[1], 1, 4);
    }
    b = b.xen_note(XEN_ELFNOTE_PHYS32_ENTRY, &0x100_0000u32.to_le_bytes());
    assert_eq!(
        parse_pvh(&b.build()),
        Err(LoadError::TooManySegments { max: MAX_SEGMENTS })
    );

    let mut b = ElfBuilder::new(ElfClass::Elf64).load(0x100_0000, TEXT, 0x40, 5);
    for _ in 0..=MAX_NOTES {
        b = b.xen_note(XEN_ELFNOTE_LOADER, b"generic\0");
    }
    assert_eq!(
        parse_pvh(&b.build()),
        Err(LoadError::TooManyNotes { max: MAX_NOTES })
    );
}

#[test]
fn load_copies_and_zero_fills() {
    let img = linux_like(ElfClass::Elf64).build();
    let p = parse_pvh(&img).unwrap();
    let mut mem = std::vec![0xeeu8; 0x30_0000];
    let base = 0x100_0000u64;
    p.load(|paddr, bytes, zero| -> Result<(), ()> {
        let start = usize::try_from(paddr - base).unwrap();
        mem[start..start + bytes.len()].copy_from_slice(bytes);
        let z = start + bytes.len();
        mem[z..z + zero as usize].fill(0);
        Ok(())
    })
    .unwrap();
    assert_eq!(&mem[..0x40], TEXT);
    assert_eq!(mem[0x40], 0xee);
    assert_eq!(&mem[0x20_0000..0x20_0020], DATA);
    assert!(mem[0x20_0020..0x20_1000].iter().all(|&b| b == 0));
    assert_eq!(mem[0x20_1000], 0xee);

    // Errors from the copier stop the load.
    let mut calls = Vec::new();
    let r = load_segments(&p, |paddr, _, _| {
        calls.push(paddr);
        Err("guest memory full")
    });
    assert_eq!(r, Err("guest memory full"));
    assert_eq!(calls, [0x100_0000]);
}

#[test]
fn random_corruption_never_panics() {
    // Deterministic xorshift: flip bytes of valid images and parse; any result is fine as
    // long as nothing panics and accepted images stay self-consistent.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for class in [ElfClass::Elf64, ElfClass::Elf32] {
        let good = linux_like(class).build();
        for _ in 0..3000 {
            let mut img = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() % img.len() as u64) as usize;
                img[pos] = next() as u8;
            }
            if let Ok(p) = parse_pvh(&img) {
                for s in p.segments.iter() {
                    assert_eq!(p.segment_data(s).len() as u64, s.filesz);
                    assert!(s.paddr >= p.lowest_paddr && s.paddr_end() <= p.highest_paddr_end);
                }
            }
        }
    }
}

#[test]
fn note_values() {
    let n = XenNote {
        ty: 1,
        desc: &[0x34, 0x12],
    };
    assert_eq!(n.value(), Some(0x1234));
    assert_eq!(
        XenNote {
            ty: 1,
            desc: &[1, 2, 3]
        }
        .value(),
        None
    );
    assert_eq!(
        XenNote {
            ty: 6,
            desc: b"linux\0\0\0"
        }
        .as_str(),
        Some("linux")
    );
    assert_eq!(
        XenNote {
            ty: 6,
            desc: &[0xff]
        }
        .as_str(),
        None
    );
}

#[test]
fn errors_display_their_values() {
    let e = LoadError::SegmentOutOfFile {
        index: 3,
        offset: 0x1000,
        filesz: 0x20,
        file_len: 100,
    };
    let s = format!("{e}");
    assert!(
        s.contains("segment 3") && s.contains("0x1000") && s.contains("100"),
        "{s}"
    );
    let e = LoadError::EntryOutsideSegments { entry: 0x1000850 };
    assert!(format!("{e}").contains("0x1000850"));
}
