//! Kernel image loading (`hypervisor/crates/pvh-loader`): ELF with Xen PVH notes, bzImage
//! setup headers, XZ payloads.
//!
//! Checks: no panic; a parsed ELF's segments lie in the file, do not overlap, have
//! `filesz <= memsz`, agree with the lowest/highest addresses reported and contain the entry
//! point; loading writes exactly each segment's bytes and BSS; a bzImage's payload lies in
//! the image after its setup sectors; XZ output never exceeds its buffer and does not depend
//! on the buffer's size once it fits.

use std::cell::RefCell;

use pvh_loader::{
    parse_bzimage, parse_pvh, xz, Compression, ImageFormat, PvhImage, MAX_NOTES, MAX_SEGMENTS,
};

/// Whether `inner` is a sub-slice of `outer` (compared by address only).
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fn check_pvh(img: &PvhImage<'_>, file: &[u8]) {
    let segs = img.segments.as_slice();
    assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
    assert!(img.notes.as_slice().len() <= MAX_NOTES);
    let mut lowest = u64::MAX;
    let mut highest = 0;
    for (i, s) in segs.iter().enumerate() {
        assert!(s.memsz > 0);
        assert!(s.filesz <= s.memsz, "filesz > memsz accepted");
        assert!(s.paddr.checked_add(s.memsz).is_some(), "segment wraps");
        let data = img.segment_data(s);
        assert_eq!(
            data.len() as u64,
            s.filesz,
            "segment bytes outside the file"
        );
        assert!(within(data, file));
        lowest = lowest.min(s.paddr);
        highest = highest.max(s.paddr_end());
        for t in &segs[..i] {
            assert!(
                s.paddr_end() <= t.paddr || t.paddr_end() <= s.paddr,
                "overlapping segments accepted: {s:?} {t:?}"
            );
        }
    }
    assert_eq!(img.lowest_paddr, lowest);
    assert_eq!(img.highest_paddr_end, highest);
    let entry = u64::from(img.entry);
    assert!(
        segs.iter()
            .any(|s| entry >= s.paddr && entry < s.paddr_end()),
        "entry outside every segment"
    );
    for n in img.notes.as_slice() {
        assert!(within(n.desc, file));
        let _ = (n.value(), n.as_str(), n.name());
    }
    let _ = (
        img.supported_features(),
        img.dom0_capable(),
        img.hypercall_page(),
        img.virt_base(),
        img.guest_os(),
    );
    // Loading: one call per segment, in order, with its bytes and its BSS.
    let mut calls = Vec::new();
    img.load(|paddr, bytes: &[u8], zero| {
        calls.push((paddr, bytes.len() as u64, zero));
        Ok::<(), ()>(())
    })
    .unwrap();
    let want: Vec<_> = segs
        .iter()
        .map(|s| (s.paddr, s.filesz, s.memsz - s.filesz))
        .collect();
    assert_eq!(calls, want);
    // The first failure stops the load.
    let mut n = 0;
    assert_eq!(
        img.load(|_, _, _| {
            n += 1;
            Err(())
        }),
        Err(())
    );
    assert_eq!(n, 1);
}

/// ELF PVH kernels: the input is the image.
pub fn target_pvh_elf(data: &[u8]) {
    match parse_pvh(data) {
        Ok(img) => check_pvh(&img, data),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Dictionary and output buffers, reused across inputs.
struct Buffers {
    dict: Vec<u8>,
    out: Vec<u8>,
    out2: Vec<u8>,
}

thread_local! {
    static BUFS: RefCell<Buffers> = RefCell::new(Buffers {
        dict: vec![0; 64 << 10],
        out: vec![0; 256 << 10],
        out2: vec![0; 256 << 10],
    });
}

/// bzImage: setup header, payload, and for an XZ payload its decompression and the ELF
/// inside, as the hypervisor loads a Linux kernel.
pub fn target_bzimage(data: &[u8]) {
    let _ = ImageFormat::detect(data);
    let bz = match parse_bzimage(data) {
        Ok(bz) => bz,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let sects = if bz.setup_sects == 0 {
        4
    } else {
        bz.setup_sects
    };
    assert_eq!(bz.pm_offset, (usize::from(sects) + 1) * 512);
    assert!(within(bz.payload, data), "payload outside the image");
    assert!(
        bz.payload.is_empty()
            || bz.payload.as_ptr() as usize >= data.as_ptr() as usize + bz.pm_offset
    );
    assert_eq!(bz.compression, Compression::detect(bz.payload));
    let _ = bz.uncompressed_size_hint();
    if bz.compression != Compression::Xz {
        return;
    }
    BUFS.with(|b| {
        let b = &mut *b.borrow_mut();
        let cap = bz
            .uncompressed_size_hint()
            .map_or(b.out.len(), |h| (h as usize).min(b.out.len()));
        if let Ok(n) = xz::decompress(bz.payload, &mut b.dict, &mut b.out[..cap]) {
            assert!(n <= cap);
            if let Ok(img) = parse_pvh(&b.out[..n]) {
                check_pvh(&img, &b.out[..n]);
            }
        }
    });
}

/// Raw XZ streams: the first byte picks the output buffer's size.
pub fn target_xz(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    BUFS.with(|b| {
        let b = &mut *b.borrow_mut();
        let cap = [0usize, 1, 7, 64, 512, 4096, 65536, 256 << 10][usize::from(sel & 7)];
        let small = xz::decompress(stream, &mut b.dict, &mut b.out[..cap]);
        if let Err(e) = &small {
            let _ = e.to_string();
        }
        // The same stream with all the room there is (only where the first result makes a
        // claim about it: corrupt and truncated streams stay so with any buffer).
        if !matches!(small, Ok(_) | Err(xz::XzError::OutputTooSmall { .. })) {
            return;
        }
        let big = xz::decompress(stream, &mut b.dict, &mut b.out2);
        match (&small, &big) {
            (Ok(n), _) => {
                assert!(*n <= cap);
                assert_eq!(big, Ok(*n), "output depends on the buffer size");
                assert_eq!(b.out[..*n], b.out2[..*n]);
            }
            (Err(xz::XzError::OutputTooSmall { capacity }), Ok(m)) => {
                assert_eq!(*capacity, cap);
                assert!(*m > cap);
                assert_eq!(b.out[..cap], b.out2[..cap], "prefix differs");
            }
            _ => {}
        }
    });
}
