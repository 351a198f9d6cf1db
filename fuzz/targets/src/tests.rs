//! The regression pass: every corpus file through its target.

use std::path::PathBuf;

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in super::TARGETS {
        let dir = corpus_root().join(name);
        let n = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert!(n > 0, "{} is empty", dir.display());
    }
}

#[test]
fn replay_corpora() {
    let mut total = 0;
    for (name, f) in super::TARGETS {
        let dir = corpus_root().join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| f(&data));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            total += 1;
        }
    }
    eprintln!("replayed {total} corpus files");
}

#[test]
fn empty_and_tiny_inputs() {
    for (_, f) in super::TARGETS {
        f(&[]);
        for b in [0u8, 1, 0xff] {
            f(&[b]);
            f(&[b; 64]);
        }
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(corpus_root().join(target).join(format!("seed-{name}"))).unwrap()
}

/// The hand-made seeds reach the accepting paths, so the fuzzer starts from valid inputs
/// and the replay checks the invariants of a successful parse, not only error paths.
#[test]
fn seeds_are_accepted() {
    use ferrovisor_boot::{BootInfo, MULTIBOOT1_BOOTLOADER_MAGIC};
    let mb1 = seed("mb1", "qemu");
    struct Mem<'a>(&'a [u8]);
    impl ferrovisor_boot::PhysRead for Mem<'_> {
        fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
            self.0
                .get(usize::try_from(addr).ok()?..usize::try_from(addr + len).ok()?)
        }
    }
    let info = BootInfo::parse(MULTIBOOT1_BOOTLOADER_MAGIC, 0, &Mem(&mb1)).unwrap();
    assert_eq!((info.memory_map.len(), info.modules.len()), (3, 2));

    for name in ["elf64", "elf32"] {
        pvh_loader::parse_pvh(&seed("pvh_elf", name)).unwrap();
    }
    let bz = seed("bzimage", "xz-elf");
    let bz = pvh_loader::parse_bzimage(&bz).unwrap();
    assert_eq!(bz.compression, pvh_loader::Compression::Xz);
    let (mut dict, mut out) = (vec![0; 1 << 16], vec![0; 1 << 16]);
    let n = pvh_loader::xz::decompress(bz.payload, &mut dict, &mut out).unwrap();
    pvh_loader::parse_pvh(&out[..n]).unwrap();

    for name in [
        "mov-load",
        "mov-store-imm",
        "lock-xadd",
        "cmpxchg",
        "bt-reg",
        "real-mode",
        "add-rm-reg-16",
        "movzx",
    ] {
        let r = crate::x86emu::run(&seed("x86_emu", name));
        assert!(
            matches!(r, Ok(x86_emu::Outcome::Completed { .. })),
            "{name}: {r:?}"
        );
    }
    for name in ["rep-movsb-read", "rep-stosd-write"] {
        let r = crate::x86emu::run(&seed("x86_emu", name));
        assert!(r.is_ok(), "{name}: {r:?}");
    }

    let domu = seed("xlcfg", "domu");
    let file = domu.split(|&b| b == 0).next().unwrap();
    let raw = xlcfg::RawConfig::parse("domu", &String::from_utf8_lossy(file)).unwrap();
    xlcfg::DomainConfig::from_raw("domu", &raw).unwrap();
}
