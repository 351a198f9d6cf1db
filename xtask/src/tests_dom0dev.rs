//! dom0 driving a host device with its interrupt (issue 14): the legacy IDE disk of QEMU's
//! default machine (PIIX3, primary channel, ports 0x1f0-0x1f7 and 0x3f6, ISA IRQ 14).
//!
//! `qemu-tcg/pci/dom0-ide-pio`: xtask writes a 4 MiB raw image of pseudo-random bytes
//! (xorshift64 from a fixed seed) and gives it to QEMU as the primary master
//! (`-drive ...,if=ide,index=0`). The `dom0-ide` test guest runs as the privileged dom0 and
//! drives the disk the way a dom0 driver would, through the control domain's direct I/O
//! ports and its virtual I/O APIC (docs/design.md, "Physical devices for dom0"). Asserted,
//! all from the guest's own observations and the image file:
//! * the guest's vIOAPIC answers (version 0x11) and the IDE status port is reached (not
//!   all ones, which is what an intercepted port reads);
//! * the FNV-1a 64 hash of the whole disk, read by PIO with one IRQ 14 per sector, equals
//!   the one xtask computes over the image; the guest counts the interrupts its own IDT
//!   took on its vector: one per sector, plus IDENTIFY's;
//! * level-triggered: the guest writes a block at LBA 4000, sees Remote IRR set until its
//!   EOI and clear after, flushes, reads the block back; after QEMU exits, the image holds
//!   that block (and nothing else changed).
//!
//! `qemu-tcg/pci/dom0-ioapic-ports`: the Debian dom0 as it boots today: Linux reports the
//! I/O APIC its MADT lists as it read it through the vIOAPIC's registers (version 17 =
//! 0x11, GSIs 0-23 from the pin count in the version register), and from dom0's shell
//! `/dev/port` (`inb`) reads the IDE status register 0x1f7 as the disk has it (not all
//! ones: the port is reached directly) and COM1's line status 0x3fd as all ones (the
//! hypervisor's console stays intercepted). Before this work all three failed: no I/O
//! APIC, every port all ones.
//!
//! Why not the Linux dom0 with `ata_piix` yet: dom0's ACPI tables are hardware-reduced,
//! and Linux 6.1 then uses the null legacy PIC (`acpi_generic_reduced_hw_init`), so
//! `nr_legacy_irqs()` is 0, no IRQ descriptor 0..15 exists and libata's legacy-mode
//! `devm_request_irq(14)` fails; see docs/design.md.

use crate::build::{self, Profile};
use crate::spec::{Emulator, Exit, ModuleSpec, QemuBoot, Test};
use crate::tests_dom0::{dom0_boot, QEMU_CMDLINE, QEMU_TIMEOUT};
use std::path::PathBuf;

/// Sectors of the image (the guest expects this many).
const SECTORS: usize = 8192;
/// Where the guest writes its block.
const WRITE_LBA: usize = 4000;

fn image_path() -> PathBuf {
    crate::util::xtask_dir().join("dom0-ide.img")
}

/// The image's contents before the run.
fn image() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(SECTORS * 512);
    while out.len() < SECTORS * 512 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The block the guest writes (as its `pattern`).
fn block() -> Vec<u8> {
    (0..512).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a test's disk image afresh (tests may run at the same time: each has its own).
fn write_image(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    crate::util::create_parent(path)?;
    std::fs::write(path, contents)?;
    Ok(())
}

/// Writes a fresh image, then names the guest to boot.
fn prepare() -> anyhow::Result<PathBuf> {
    write_image(&image_path(), &image())?;
    Ok(build::output_path(&build::GUEST_DOM0_IDE, Profile::Release))
}

fn hash_matches(value: &str) -> Result<(), String> {
    let want = format!("{:016x}", fnv1a64(&image()));
    if value == want {
        Ok(())
    } else {
        Err(format!(
            "dom0 read a disk hashing to {value}, the image hashes to {want}"
        ))
    }
}

/// One interrupt per sector plus IDENTIFY's, as the guest's IDT counted them.
fn edge_count(value: &str) -> Result<(), String> {
    match value.parse::<usize>() {
        Ok(n) if n == SECTORS + 1 => Ok(()),
        _ => Err(format!(
            "dom0 took {value} edge interrupts, expected {}",
            SECTORS + 1
        )),
    }
}

/// After QEMU: the image at `path` is `want`, and `region` of it (what dom0 wrote,
/// `what`) in particular.
fn image_is(
    path: &std::path::Path,
    want: &[u8],
    region: std::ops::Range<usize>,
    what: &str,
) -> Result<(), String> {
    let now = std::fs::read(path).map_err(|e| format!("reading the image: {e}"))?;
    if now.len() != want.len() {
        return Err(format!(
            "the image is {} bytes, expected {}",
            now.len(),
            want.len()
        ));
    }
    if now[region.clone()] != want[region] {
        return Err(format!("the image does not hold {what}"));
    }
    if now != want {
        return Err(format!("the image changed outside {what}"));
    }
    Ok(())
}

/// After QEMU: the block at LBA 4000 is the guest's, the rest is the original image.
fn image_written() -> Result<(), String> {
    let region = WRITE_LBA * 512..(WRITE_LBA + 1) * 512;
    let mut want = image();
    want[region.clone()].copy_from_slice(&block());
    image_is(&image_path(), &want, region, "dom0's block at LBA 4000")
}

/// A pattern for a line dom0 printed (optional `(d0) ` prefix), as in `tests_dom0`.
macro_rules! d0 {
    ($p:literal) => {
        concat!(r"^(?:\(d0\) )?", $p)
    };
}

/// The Linux dom0: its own report of the vIOAPIC, and two ports read through `/dev/port`.
fn linux_ioapic_ports() -> Test {
    let mut t = dom0_boot(
        "qemu-tcg/pci/dom0-ioapic-ports",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        QEMU_CMDLINE,
        QEMU_TIMEOUT,
    )
    .qemu_args(&["-drive", drive_arg(&linux_image_path())])
    .expect_group(&[d0!(
        r".*IOAPIC\[0\]: apic_id \d+, version 17, address 0xfec00000, GSI 0-23"
    )]);
    let args = t.modules[0].args;
    t.modules[0] = ModuleSpec::prepared(prepare_linux).args(args);
    // Values printed as `NAME=x<value>` so the echo of the typed command cannot match.
    t = t.send(
        r"dom0: shell ready",
        "p() { dd if=/dev/port bs=1 skip=$(($1)) count=1 2>/dev/null | od -An -tx1 | tr -d ' '; }; \
         echo IDE_STATUS=x$(p 0x1f7) COM1_LSR=x$(p 0x3fd)\n",
    );
    t.expect_text(d0!(r"IDE_STATUS=x(\w*) COM1_LSR=x\w*\r?$"), |v| {
        if v.len() == 2 && v != "ff" {
            Ok(())
        } else {
            Err(format!(
                "dom0 read the IDE status port as {v:?}, expected the disk's status"
            ))
        }
    })
    .expect_value(d0!(r"IDE_STATUS=x\w* COM1_LSR=x(\w*)\r?$"), "ff")
    .exit(Exit::WhenExpected)
}

/// QEMU's `-drive` value for `path` as the primary master.
fn drive_arg(path: &std::path::Path) -> &'static str {
    Box::leak(format!("file={},format=raw,if=ide,index=0", path.display()).into_boxed_str())
}

/// The Linux test's disk (its own file: tests may run at the same time).
fn linux_image_path() -> PathBuf {
    crate::util::xtask_dir().join("dom0-ioapic.img")
}

/// Writes the Linux test's disk, then names dom0's kernel.
fn prepare_linux() -> anyhow::Result<PathBuf> {
    write_image(&linux_image_path(), &image())?;
    Ok(crate::linux::assets()?.vmlinuz.clone())
}

/// The AHCI test's disk (8 MiB of the same pseudo-random stream).
fn ahci_image_path() -> PathBuf {
    crate::util::xtask_dir().join("dom0-ahci.img")
}

const AHCI_MIB: usize = 8;

fn ahci_image() -> Vec<u8> {
    let mut img = image();
    while img.len() < AHCI_MIB << 20 {
        let more: Vec<u8> = img.iter().map(|b| b.rotate_left(3) ^ 0x5a).collect();
        img.extend(more);
    }
    img.truncate(AHCI_MIB << 20);
    img
}

/// Writes the AHCI test's disk, then names dom0's kernel.
fn prepare_ahci() -> anyhow::Result<PathBuf> {
    write_image(&ahci_image_path(), &ahci_image())?;
    Ok(crate::linux::assets()?.vmlinuz.clone())
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", md5::compute(bytes))
}

/// dom0 read the whole disk by DMA: its MD5 is the image's.
fn ahci_read_matches(value: &str) -> Result<(), String> {
    let want = md5_hex(&ahci_image());
    if value == want {
        Ok(())
    } else {
        Err(format!(
            "dom0 read a disk with MD5 {value}, the image's is {want}"
        ))
    }
}

/// dom0 copied the disk's first 2 MiB to 6 MiB by DMA in both directions, and read the
/// copy back: the MD5 it read back is that of the first 2 MiB.
fn ahci_copy_matches(value: &str) -> Result<(), String> {
    let want = md5_hex(&ahci_image()[..2 << 20]);
    if value == want {
        Ok(())
    } else {
        Err(format!(
            "dom0 read back {value} from its copy at 6 MiB, expected {want}"
        ))
    }
}

/// After QEMU: the image holds dom0's copy at 6 MiB and nothing else changed.
fn ahci_image_written() -> Result<(), String> {
    let mut want = ahci_image();
    want.copy_within(..2 << 20, 6 << 20);
    image_is(
        &ahci_image_path(),
        &want,
        6 << 20..8 << 20,
        "dom0's copy at 6 MiB",
    )
}

/// The Debian dom0 drives an AHCI (SATA) disk itself: Linux's `ahci` driver with an MSI
/// (mediated by vPCI) and bus-master DMA into dom0's identity-mapped RAM. It reads the
/// whole disk with O_DIRECT (the device writes dom0's pages), copies its first 2 MiB to
/// 6 MiB with O_DIRECT (the device reads them), reads the copy back, and counts the
/// ahci MSIs Linux took.
fn linux_ahci_dma() -> Test {
    let mut t = dom0_boot(
        "qemu-tcg/pci/dom0-ahci-dma",
        Emulator::qemu_tcg(QemuBoot::Kernel),
        QEMU_CMDLINE,
        QEMU_TIMEOUT,
    )
    .qemu_args(&[
        "-device",
        "ahci,id=ahci",
        "-drive",
        Box::leak(
            format!(
                "file={},format=raw,if=none,id=ahcidisk",
                ahci_image_path().display()
            )
            .into_boxed_str(),
        ),
        "-device",
        "ide-hd,drive=ahcidisk,bus=ahci.0",
    ]);
    t.modules[0] = ModuleSpec::prepared(prepare_ahci).args(crate::tests_pci::KERNEL_CMDLINE);
    t = t
        .send(
            r"dom0: shell ready",
            "for i in $(seq 100); do [ -b /dev/sda ] && break; sleep 0.1; done; \
             echo AHCI_READ=x$(dd if=/dev/sda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d ' ' -f 1)\n",
        )
        .send(
            r"AHCI_READ=x\w*\r?\n",
            "dd if=/dev/sda of=/dev/sda bs=1M count=2 seek=6 iflag=direct oflag=direct 2>/dev/null; \
             echo AHCI_COPY=x$(dd if=/dev/sda bs=1M skip=6 count=2 iflag=direct 2>/dev/null | md5sum | cut -d ' ' -f 1) \
             AHCI_MSI=x$(grep -i 'PCI-MSI.*ahci' /proc/interrupts | \
             awk '{ n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print n }')\n",
        );
    t.expect_text(d0!(r"AHCI_READ=x(\w*)\r?$"), ahci_read_matches)
        .expect_text(
            d0!(r"AHCI_COPY=x(\w*) AHCI_MSI=x\d+\r?$"),
            ahci_copy_matches,
        )
        .expect_text(d0!(r"AHCI_COPY=x\w* AHCI_MSI=x(\d*)\r?$"), |v| {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(()),
                _ => Err(format!("dom0 counted {v:?} ahci MSIs, expected some")),
            }
        })
        // Linux registers each function with PHYSDEVOP_pci_device_add.
        .forbid(&[d0!(
            r".*Failed to add - passthrough or MSI/MSI-X might fail"
        )])
        .after(ahci_image_written)
        .exit(Exit::WhenExpected)
}

pub fn all() -> Vec<Test> {
    let drive = drive_arg(&image_path());
    vec![
        linux_ioapic_ports(),
        linux_ahci_dma(),
        Test::new(
            "qemu-tcg/pci/dom0-ide-pio",
            Emulator::qemu_tcg(QemuBoot::Kernel),
        )
        .cmdline("console=com1 on_idle=poweroff")
        .module(ModuleSpec::prepared(prepare).args("dom0-ide"))
        .qemu_args(&["-drive", drive])
        .expect(&[r"^\(d0\) dom0-ide: I/O APIC version 0x11, \d+ pins$"])
        .expect(&[r"^\(d0\) dom0-ide: status 0x[0-9a-f]+$"])
        .expect_text(
            r"^\(d0\) dom0-ide: read 8192 sectors, fnv1a64=([0-9a-f]+), edge interrupts \d+$",
            hash_matches,
        )
        .expect_text(
            r"^\(d0\) dom0-ide: read 8192 sectors, fnv1a64=[0-9a-f]+, edge interrupts (\d+)$",
            edge_count,
        )
        .expect(&[
            r"^\(d0\) dom0-ide: wrote LBA 4000, read it back, level interrupts 3$",
            r"^\(d0\) guest dom0-ide: PASS$",
        ])
        .after(image_written)
        .timeout_secs(180),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_and_block_are_what_the_guest_expects() {
        let img = image();
        assert_eq!(img.len(), 8192 * 512);
        assert_ne!(img[..512], img[512..1024]);
        assert_eq!(block()[..4], [7, 38, 69, 100]);
        // FNV-1a 64 of "a" (the published test vector).
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(edge_count("8193").is_ok() && edge_count("8192").is_err());
    }

    #[test]
    fn image_check_tells_the_region_from_the_rest() {
        let path = std::env::temp_dir().join(format!("xtask-image-is-{}", std::process::id()));
        let want = vec![1u8, 2, 3, 4];
        std::fs::write(&path, [1u8, 2, 3, 4]).unwrap();
        assert!(image_is(&path, &want, 1..2, "x").is_ok());
        std::fs::write(&path, [1u8, 9, 3, 4]).unwrap();
        assert_eq!(
            image_is(&path, &want, 1..2, "x"),
            Err("the image does not hold x".into())
        );
        std::fs::write(&path, [1u8, 2, 3, 9]).unwrap();
        assert_eq!(
            image_is(&path, &want, 1..2, "x"),
            Err("the image changed outside x".into())
        );
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        assert!(image_is(&path, &want, 1..2, "x").is_err());
        let _ = std::fs::remove_file(&path);
    }
}
