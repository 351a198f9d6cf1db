//! `dom0-ide`: a **privileged** domain 0 (dom0 feature note) that drives the host's legacy
//! IDE disk itself, as a dom0 driver would, through what the hypervisor gives a control
//! domain (docs/design.md, "Physical devices for dom0"):
//!
//! * the I/O ports of the primary IDE channel (0x1f0-0x1f7, 0x3f6), reached directly
//!   (no exit: the control domain's I/O permission map);
//! * ISA IRQ 14 through its **virtual I/O APIC** at the host I/O APIC's address
//!   (0xfec00000 on QEMU's machine; the guest does not parse its MADT), which the hypervisor
//!   binds to the physical pin when the guest unmasks RTE 14, delivering the vector the
//!   guest programmed to its local APIC.
//!
//! The guest reads the whole disk with READ SECTORS (PIO, one interrupt per sector, edge
//! triggered), printing an FNV-1a hash of its bytes that xtask compares with the image it
//! wrote; then, with RTE 14 level-triggered, writes a known block at LBA
//! [`WRITE_LBA`] (Remote IRR must read 1 until its EOI, 0 after), flushes the disk cache
//! and reads the block back. It prints the interrupts it took on its vector; xtask checks
//! the image file after QEMU exits.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

use guest_rt::{arch, ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

guest_rt::dom0_feature_note!();

const IOAPIC: u64 = 0xfec0_0000;
const LAPIC: u64 = 0xfee0_0000;
/// The vector the guest gives IRQ 14.
const VECTOR: u8 = 0x5e;
/// GSI of ISA IRQ 14 (no override on QEMU's i440FX).
const PIN: u32 = 14;

/// Sectors xtask's image has (4 MiB).
const SECTORS: u32 = 8192;
/// Where the guest writes its block.
const WRITE_LBA: u32 = 4000;

const DATA: u16 = 0x1f0;
const COUNT: u16 = 0x1f2;
const LBA0: u16 = 0x1f3;
const LBA1: u16 = 0x1f4;
const LBA2: u16 = 0x1f5;
const DEVICE: u16 = 0x1f6;
const STATUS: u16 = 0x1f7;
const COMMAND: u16 = 0x1f7;
const CONTROL: u16 = 0x3f6;

const BSY: u8 = 0x80;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
const DF: u8 = 0x20;

/// The byte at offset `i` of the block the guest writes (xtask checks the same).
fn pattern(i: usize) -> u8 {
    ((i * 31 + 7) % 251) as u8
}

fn inb(port: u16) -> u8 {
    // SAFETY: the primary IDE channel's ports, which this test drives.
    unsafe { arch::inb(port) }
}

fn outb(port: u16, v: u8) {
    // SAFETY: as in `inb`.
    unsafe { arch::outb(port, v) }
}

fn insw(port: u16, buf: &mut [u16; 256]) {
    // SAFETY: reads 256 words into `buf` (RDI, RCX = 256, DF clear in the runtime).
    unsafe {
        asm!("rep insw", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
             inout("rcx") 256u64 => _, options(nostack))
    }
}

fn outsw(port: u16, buf: &[u16; 256]) {
    // SAFETY: writes the 256 words of `buf` (RSI, RCX = 256).
    unsafe {
        asm!("rep outsw", in("dx") port, inout("rsi") buf.as_ptr() => _,
             inout("rcx") 256u64 => _, options(nostack, readonly))
    }
}

fn ioapic_read(reg: u32) -> u32 {
    // SAFETY: the runtime identity-maps the first 4 GiB; the page is the hypervisor's
    // emulated I/O APIC, which is under test.
    unsafe {
        write_volatile(IOAPIC as *mut u32, reg);
        read_volatile((IOAPIC + 0x10) as *const u32)
    }
}

fn ioapic_write(reg: u32, v: u32) {
    // SAFETY: as in `ioapic_read`.
    unsafe {
        write_volatile(IOAPIC as *mut u32, reg);
        write_volatile((IOAPIC + 0x10) as *mut u32, v);
    }
}

fn lapic_write(off: u64, v: u32) {
    // SAFETY: the emulated xAPIC page (xAPIC mode, as Xen starts a PVH vCPU).
    unsafe { write_volatile((LAPIC + off) as *mut u32, v) }
}

#[cfg(target_os = "none")]
fn taken() -> u64 {
    guest_rt::idt::vector_count(VECTOR)
}

#[cfg(not(target_os = "none"))]
fn taken() -> u64 {
    0
}

fn now() -> Result<u64, guest_rt::Fail> {
    guest_rt::pvclock::now_ns().ok_or_else(|| guest_rt::Fail::new(format_args!("no pvclock")))
}

/// Waits (halting, interrupts on) until the vector was taken more than `before` times;
/// fails after 5 s. A Xen one-shot timer bounds each halt.
fn wait_irq(before: u64, what: &str) -> TestResult {
    let start = now()?;
    loop {
        arch::sti();
        arch::pause();
        arch::cli();
        if taken() > before {
            return Ok(());
        }
        let t = now()?;
        ensure!(
            t - start < 5_000_000_000,
            "no IRQ 14 within 5 s for {what} (status {:#x})",
            inb(CONTROL)
        );
        let rc = guest_rt::hypercall::set_timer_op(t + 10_000_000);
        ensure!(rc == 0, "set_timer_op failed: {rc}");
        arch::sti_hlt_cli();
    }
}

/// Polls the alternate status until BSY clears; fails after 5 s.
fn not_busy(what: &str) -> Result<u8, guest_rt::Fail> {
    let start = now()?;
    loop {
        let s = inb(CONTROL);
        if s & BSY == 0 {
            return Ok(s);
        }
        ensure!(now()? - start < 5_000_000_000, "disk busy for 5 s: {what}");
        arch::pause();
    }
}

/// After an interrupt: the status register (reading it ends the device's INTRQ), checked.
fn status_ok(what: &str) -> Result<u8, guest_rt::Fail> {
    not_busy(what)?;
    let s = inb(STATUS);
    ensure!(
        s & (ERR | DF) == 0,
        "{what}: status {s:#x} (error {:#x})",
        inb(0x1f1)
    );
    Ok(s)
}

fn eoi() {
    lapic_write(0xb0, 0);
}

fn command(cmd: u8, lba: u32, count: u8) {
    outb(DEVICE, 0xe0 | ((lba >> 24) & 0xf) as u8);
    outb(COUNT, count);
    outb(LBA0, lba as u8);
    outb(LBA1, (lba >> 8) as u8);
    outb(LBA2, (lba >> 16) as u8);
    outb(COMMAND, cmd);
}

/// Programs RTE 14: the guest's vector, fixed, physical destination APIC id 0, active
/// high, edge or level, unmasked.
fn route(level: bool) {
    ioapic_write(0x11 + 2 * PIN, 0);
    ioapic_write(
        0x10 + 2 * PIN,
        u32::from(VECTOR) | if level { 1 << 15 } else { 0 },
    );
}

struct Fnv(u64);

impl Fnv {
    fn add(&mut self, words: &[u16; 256]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

fn test_main(_si: &StartInfo) -> TestResult {
    ensure!(
        guest_rt::is_control_domain()?,
        "not the control domain (no XENFEAT_dom0)"
    );
    ensure!(
        guest_rt::pvclock::map_shared_info() == 0,
        "cannot map shared_info for the pvclock"
    );
    // The vIOAPIC answers at the host I/O APIC's address.
    let version = ioapic_read(1);
    let pins = (version >> 16 & 0xff) + 1;
    println!(
        "dom0-ide: I/O APIC version {:#x}, {pins} pins",
        version & 0xff
    );
    ensure!(
        version & 0xff == 0x11 && pins > PIN,
        "I/O APIC version register reads {version:#x}"
    );
    ensure!(
        ioapic_read(0x10 + 2 * PIN) & (1 << 16) != 0,
        "RTE 14 not masked at start"
    );
    // The local APIC on (software enable, spurious vector 0xff), TPR 0.
    lapic_write(0xf0, 0x1ff);
    lapic_write(0x80, 0);

    // The disk: master of the primary channel, interrupts on (nIEN = 0).
    outb(DEVICE, 0xe0);
    outb(CONTROL, 0);
    let s = inb(STATUS);
    println!("dom0-ide: status {s:#x}");
    ensure!(
        s != 0xff,
        "the IDE status port reads all ones: the port is not reached"
    );
    route(false);
    let base = taken();

    // IDENTIFY DEVICE: the disk's size in LBA28 sectors (words 60-61).
    let mut buf = [0u16; 256];
    let before = taken();
    outb(COMMAND, 0xec);
    wait_irq(before, "IDENTIFY")?;
    let s = status_ok("IDENTIFY")?;
    ensure!(s & DRQ != 0, "IDENTIFY: no data (status {s:#x})");
    insw(DATA, &mut buf);
    eoi();
    let sectors = u32::from(buf[60]) | u32::from(buf[61]) << 16;
    ensure!(
        sectors == SECTORS,
        "IDENTIFY says {sectors} sectors, expected {SECTORS}"
    );

    // The whole disk, 256 sectors per command, an interrupt per sector.
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    let mut lba = 0;
    while lba < SECTORS {
        let start = taken();
        command(0x20, lba, 0);
        for i in 0..256 {
            // One interrupt per sector (for sector i, the (i+1)-th since the command).
            wait_irq(start + i, "READ SECTORS")?;
            let s = status_ok("READ SECTORS")?;
            ensure!(
                s & DRQ != 0,
                "READ SECTORS at {}: no data",
                u64::from(lba) + i
            );
            insw(DATA, &mut buf);
            eoi();
            hash.add(&buf);
        }
        lba += 256;
    }
    let edge = taken() - base;
    println!(
        "dom0-ide: read {SECTORS} sectors, fnv1a64={:016x}, edge interrupts {edge}",
        hash.0
    );

    // Level-triggered: write a block, flush, read it back.
    route(true);
    let base = taken();
    let mut block = [0u16; 256];
    for (i, w) in block.iter_mut().enumerate() {
        *w = u16::from_le_bytes([pattern(2 * i), pattern(2 * i + 1)]);
    }
    let before = taken();
    command(0x30, WRITE_LBA, 1);
    let s = not_busy("WRITE SECTORS")?;
    ensure!(s & DRQ != 0, "WRITE SECTORS: not ready for data ({s:#x})");
    outsw(DATA, &block);
    wait_irq(before, "WRITE SECTORS")?;
    let irr = ioapic_read(0x10 + 2 * PIN) & (1 << 14) != 0;
    status_ok("WRITE SECTORS")?;
    eoi();
    let irr_after = ioapic_read(0x10 + 2 * PIN) & (1 << 14) != 0;
    ensure!(
        irr && !irr_after,
        "level RTE 14: Remote IRR {irr} before the EOI, {irr_after} after (expected true, false)"
    );
    let before = taken();
    command(0xe7, 0, 0);
    wait_irq(before, "FLUSH CACHE")?;
    status_ok("FLUSH CACHE")?;
    eoi();
    let before = taken();
    command(0x20, WRITE_LBA, 1);
    wait_irq(before, "READ SECTORS (back)")?;
    status_ok("READ SECTORS (back)")?;
    insw(DATA, &mut buf);
    eoi();
    ensure!(
        buf == block,
        "the block read back differs from the one written"
    );
    let level = taken() - base;
    println!("dom0-ide: wrote LBA {WRITE_LBA}, read it back, level interrupts {level}");
    // Masked again: nothing more arrives.
    ioapic_write(0x10 + 2 * PIN, u32::from(VECTOR) | 1 << 16);
    Ok(())
}
