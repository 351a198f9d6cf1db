//! `mmio-hole`: guest-physical addresses below 4 GiB that hold neither RAM nor anything
//! else (the HPET's 0xfed00000, the IOAPIC's 0xfec00000, the gap above RAM) behave as on
//! Xen with no device model behind them: every read returns all ones, every write is
//! dropped, and the guest carries on. Each case runs a different instruction form through
//! the hypervisor's instruction emulator and checks the architectural result (the
//! destination register, the flags, RSI/RDI/RCX of string instructions, the RAM buffer a
//! string move filled) and that a write did not stick.
//!
//! Absent I/O ports behave the same way for string I/O: `INS` stores all ones, `OUTS`
//! drops its data, and RSI/RDI/RCX move by the operand size in the direction RFLAGS.DF
//! gives, whether or not the instruction has a REP prefix, at the instruction's address size
//! (an address-size prefix in 64-bit code uses ESI/EDI/ECX and zero-extends them).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

use guest_rt::{ensure, println, StartInfo, TestResult};

guest_rt::entry!(test_main);

/// Where an HPET would be; nothing backs it for a PVH guest.
const HPET: u64 = 0xfed0_0000;
/// Where an IOAPIC would be.
const IOAPIC: u64 = 0xfec0_0000;
/// In the gap between the guest's RAM and the top of the hole.
const GAP: u64 = 0xc000_0000;

fn test_main(si: &StartInfo) -> TestResult {
    ensure!(
        !si.memmap_overlaps(GAP, GAP + 0x1000) && !si.memmap_overlaps(HPET, HPET + 0x1000),
        "the test addresses are in the guest's memory map: choose others"
    );
    let mut passed = 0u32;
    let mut case = |name: &str, r: TestResult| -> TestResult {
        r?;
        passed += 1;
        println!("mmio-hole: {name}: ok");
        Ok(())
    };

    case("loads of every width read all ones", loads())?;
    case("stores are dropped", stores())?;
    case(
        "MOVZX and MOVSX extend the all-ones byte and word",
        extensions(),
    )?;
    case("ADD from the hole sets CF like hardware", add_from())?;
    case(
        "read-modify-writes (LOCK OR, INC, NOT) survive and do not stick",
        rmw(),
    )?;
    case("XCHG returns all ones", xchg())?;
    case("LOCK CMPXCHG compares against all ones", cmpxchg())?;
    case(
        "REP MOVSD from the hole fills RAM with ones",
        rep_movs_from(),
    )?;
    case(
        "REP STOSB into the hole is dropped, RDI and RCX advance",
        rep_stos_into(),
    )?;
    case(
        "REP MOVSB backwards (DF=1) from the hole",
        rep_movs_backwards(),
    )?;
    case(
        "the gap above RAM and the IOAPIC page read all ones",
        other_addresses(),
    )?;
    case("REP INSD from an absent port stores all ones", rep_ins())?;
    case(
        "REP INSW backwards (DF=1) stores below RDI",
        rep_ins_backwards(),
    )?;
    case(
        "REP OUTSD to an absent port advances RSI by 4 per element",
        rep_outs(),
    )?;
    case("OUTSB with DF=1 moves RSI down by one", outs_backwards())?;
    case(
        "ADDR32 REP INSB uses EDI and ECX, zero-extends them",
        rep_ins_addr32(),
    )?;
    case("ADDR32 OUTSB uses ESI, zero-extends it", outs_addr32())?;
    println!("mmio-hole: {passed} cases passed");
    ensure!(passed == 17, "only {passed} of 17 cases ran");
    Ok(())
}

fn load<T: Copy>(addr: u64) -> T {
    // SAFETY: the runtime identity-maps the first 4 GiB; the hypervisor emulates the
    // access (the address is not RAM), which is what is under test.
    unsafe { read_volatile(addr as *const T) }
}

fn store<T: Copy>(addr: u64, v: T) {
    // SAFETY: as in `load`; nothing in the guest lives at the address.
    unsafe { write_volatile(addr as *mut T, v) }
}

fn loads() -> TestResult {
    let (b, w, d, q) = (
        load::<u8>(HPET + 1),
        load::<u16>(HPET + 2),
        load::<u32>(HPET),
        load::<u64>(HPET + 8),
    );
    ensure!(
        b == 0xff && w == 0xffff && d == 0xffff_ffff && q == u64::MAX,
        "read {b:#x} {w:#x} {d:#x} {q:#x}"
    );
    // A 32-bit load zero-extends into the whole register, as on hardware.
    let r: u64;
    // SAFETY: a load from the identity-mapped hole; only `r` is written.
    unsafe {
        asm!("mov rax, -1", "mov eax, dword ptr [{a}]", a = in(reg) HPET + 0x10, out("rax") r,
            options(nostack));
    }
    ensure!(r == 0xffff_ffff, "mov eax, [hole] left rax = {r:#x}");
    Ok(())
}

fn stores() -> TestResult {
    store::<u32>(HPET + 0xf0, 0x1234_5678);
    store::<u64>(HPET + 0xf8, 0);
    store::<u8>(HPET + 0x100, 0);
    let (d, q, b) = (
        load::<u32>(HPET + 0xf0),
        load::<u64>(HPET + 0xf8),
        load::<u8>(HPET + 0x100),
    );
    ensure!(
        d == 0xffff_ffff && q == u64::MAX && b == 0xff,
        "writes stuck: {d:#x} {q:#x} {b:#x}"
    );
    Ok(())
}

fn extensions() -> TestResult {
    let (zx, sx): (u64, u64);
    // SAFETY: loads from the identity-mapped hole into the named registers.
    unsafe {
        asm!("movzx {z:e}, byte ptr [{a}]", "movsx {s}, word ptr [{a}]",
            a = in(reg) HPET + 0x20, z = out(reg) zx, s = out(reg) sx, options(nostack));
    }
    ensure!(
        zx == 0xff && sx == u64::MAX,
        "movzx gave {zx:#x}, movsx gave {sx:#x}"
    );
    Ok(())
}

fn add_from() -> TestResult {
    let (sum, carry, zero): (u64, u8, u8);
    // SAFETY: a read from the identity-mapped hole; flags are captured immediately.
    unsafe {
        asm!("mov {s}, 1", "add {s}, qword ptr [{a}]", "setc {c}", "setz {z}",
            a = in(reg) HPET + 0x28, s = out(reg) sum, c = out(reg_byte) carry,
            z = out(reg_byte) zero, options(nostack));
    }
    ensure!(
        sum == 0 && carry == 1 && zero == 1,
        "1 + all ones = {sum:#x}, CF {carry}, ZF {zero}"
    );
    Ok(())
}

fn rmw() -> TestResult {
    // SAFETY: read-modify-writes of the identity-mapped hole; no register changes.
    unsafe {
        asm!("lock or dword ptr [{a}], 1", "inc qword ptr [{a}]", "not byte ptr [{a}]",
            a = in(reg) HPET + 0x30, options(nostack));
    }
    let q = load::<u64>(HPET + 0x30);
    ensure!(q == u64::MAX, "the hole now reads {q:#x}");
    Ok(())
}

fn xchg() -> TestResult {
    let mut v: u64 = 5;
    // SAFETY: an exchange with the identity-mapped hole; only `v` changes.
    unsafe {
        asm!("xchg qword ptr [{a}], {v}", a = in(reg) HPET + 0x38, v = inout(reg) v,
            options(nostack));
    }
    ensure!(v == u64::MAX, "xchg returned {v:#x}");
    ensure!(load::<u64>(HPET + 0x38) == u64::MAX, "xchg's write stuck");
    Ok(())
}

fn cmpxchg() -> TestResult {
    let mut expected = u64::MAX;
    let zf_out: u8;
    // SAFETY: a compare-exchange with the identity-mapped hole; RAX and the flag change.
    unsafe {
        asm!("lock cmpxchg dword ptr [{a}], {n:e}", "setz {z}",
            a = in(reg) HPET + 0x40, n = in(reg) 7u64, z = out(reg_byte) zf_out,
            inout("rax") expected, options(nostack));
    }
    // Whether a successful 32-bit CMPXCHG clears RAX's upper half differs between CPUs:
    // only EAX is checked.
    ensure!(
        zf_out == 1 && expected as u32 == u32::MAX,
        "cmpxchg against all ones: ZF {zf_out}, rax {expected:#x}"
    );
    // A mismatch loads the all-ones value into EAX (zero-extended).
    expected = 3;
    let zf2: u8;
    // SAFETY: as above.
    unsafe {
        asm!("lock cmpxchg dword ptr [{a}], {n:e}", "setz {z}",
            a = in(reg) HPET + 0x40, n = in(reg) 7u64, z = out(reg_byte) zf2,
            inout("rax") expected, options(nostack));
    }
    ensure!(
        zf2 == 0 && expected == 0xffff_ffff,
        "cmpxchg mismatch: ZF {zf2}, rax {expected:#x}"
    );
    Ok(())
}

fn rep_movs_from() -> TestResult {
    let mut buf = [0u32; 16];
    let dst = buf.as_mut_ptr() as u64;
    let (rcx, rsi, rdi): (u64, u64, u64);
    // SAFETY: copies 16 dwords from the identity-mapped hole into `buf`, which is 16
    // dwords long; DF is clear (the ABI guarantees it).
    unsafe {
        asm!("rep movsd", inout("rcx") 16u64 => rcx, inout("rsi") HPET + 0x200 => rsi,
            inout("rdi") dst => rdi, options(nostack));
    }
    ensure!(
        rcx == 0 && rsi == HPET + 0x240 && rdi == dst + 64,
        "after rep movsd: rcx {rcx}, rsi {rsi:#x}, rdi {rdi:#x} (buffer at {dst:#x})"
    );
    ensure!(
        buf.iter().all(|&d| d == 0xffff_ffff),
        "buffer holds {buf:x?}"
    );
    Ok(())
}

fn rep_stos_into() -> TestResult {
    let (rcx, rdi): (u64, u64);
    // SAFETY: stores 32 bytes into the identity-mapped hole; DF is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") 32u64 => rcx, inout("rdi") HPET + 0x300 => rdi,
            in("al") 0u8, options(nostack));
    }
    ensure!(
        rcx == 0 && rdi == HPET + 0x320,
        "after rep stosb: rcx {rcx}, rdi {rdi:#x}"
    );
    ensure!(load::<u64>(HPET + 0x310) == u64::MAX, "rep stosb stuck");
    Ok(())
}

fn rep_movs_backwards() -> TestResult {
    let mut buf = [0u8; 8];
    let last = buf.as_mut_ptr() as u64 + 7;
    let (rcx, rsi, rdi): (u64, u64, u64);
    // SAFETY: copies 8 bytes backwards from the hole into `buf` (its last byte first);
    // DF is set for the one instruction and cleared again before the asm block ends.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") 8u64 => rcx,
            inout("rsi") HPET + 0x407 => rsi, inout("rdi") last => rdi, options(nostack));
    }
    ensure!(
        rcx == 0 && rsi == HPET + 0x3ff && rdi == last - 8,
        "after std; rep movsb: rcx {rcx}, rsi {rsi:#x}, rdi {rdi:#x} (last byte {last:#x})"
    );
    ensure!(buf == [0xff; 8], "buffer holds {buf:x?}");
    Ok(())
}

fn other_addresses() -> TestResult {
    let (g, io) = (load::<u32>(GAP), load::<u32>(IOAPIC));
    store::<u32>(GAP, 0);
    let g2 = load::<u32>(GAP + 4);
    ensure!(
        g == 0xffff_ffff && io == 0xffff_ffff && g2 == 0xffff_ffff,
        "gap {g:#x}, IOAPIC {io:#x}, gap after a store {g2:#x}"
    );
    Ok(())
}

/// A port nothing answers (between the second IDE controller's ranges).
const ABSENT_PORT: u16 = 0x2f0;

fn rep_ins() -> TestResult {
    let mut buf = [0u32; 6];
    let dst = buf.as_mut_ptr() as u64 + 4;
    let (rcx, rdi): (u64, u64);
    // SAFETY: INSD writes 4 dwords into `buf[1..5]`; DF is clear.
    unsafe {
        asm!("rep insd", inout("rcx") 4u64 => rcx, inout("rdi") dst => rdi,
            in("dx") ABSENT_PORT, options(nostack));
    }
    ensure!(
        rcx == 0 && rdi == dst + 16,
        "after rep insd: rcx {rcx}, rdi {rdi:#x} (start {dst:#x})"
    );
    ensure!(
        buf == [0, u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0],
        "buffer holds {buf:x?}"
    );
    Ok(())
}

fn rep_ins_backwards() -> TestResult {
    let mut buf = [0u16; 6];
    let last = buf.as_mut_ptr() as u64 + 8; // element 4
    let (rcx, rdi): (u64, u64);
    // SAFETY: INSW writes elements 4, 3 and 2 of `buf`; DF is set for the one
    // instruction and cleared before the block ends.
    unsafe {
        asm!("std", "rep insw", "cld", inout("rcx") 3u64 => rcx, inout("rdi") last => rdi,
            in("dx") ABSENT_PORT, options(nostack));
    }
    ensure!(
        rcx == 0 && rdi == last - 6,
        "after std; rep insw: rcx {rcx}, rdi {rdi:#x} (start {last:#x})"
    );
    ensure!(
        buf == [0, 0, 0xffff, 0xffff, 0xffff, 0],
        "buffer holds {buf:x?}"
    );
    Ok(())
}

fn rep_outs() -> TestResult {
    let buf = [0x1234_5678u32; 5];
    let src = buf.as_ptr() as u64;
    let (rcx, rsi): (u64, u64);
    // SAFETY: OUTSD reads the 5 dwords of `buf`; DF is clear.
    unsafe {
        asm!("rep outsd", inout("rcx") 5u64 => rcx, inout("rsi") src => rsi,
            in("dx") ABSENT_PORT, options(nostack));
    }
    ensure!(
        rcx == 0 && rsi == src + 20,
        "after rep outsd: rcx {rcx}, rsi {rsi:#x} (start {src:#x})"
    );
    Ok(())
}

fn outs_backwards() -> TestResult {
    let buf = [0x5au8; 2];
    let src = buf.as_ptr() as u64 + 1;
    let rsi: u64;
    // SAFETY: OUTSB reads one byte of `buf`; DF is set for the one instruction.
    unsafe {
        asm!("std", "outsb", "cld", inout("rsi") src => rsi, in("dx") ABSENT_PORT,
            options(nostack));
    }
    ensure!(
        rsi == src - 1,
        "after std; outsb: rsi {rsi:#x} (start {src:#x})"
    );
    Ok(())
}

/// With an address-size prefix in 64-bit code, INS uses EDI and ECX (bits 63:32 of RDI and
/// RCX are ignored) and leaves them zero-extended, as a 32-bit register write does.
fn rep_ins_addr32() -> TestResult {
    let mut buf = [0u8; 8];
    let dst = buf.as_mut_ptr() as u64 + 2;
    assert!(dst >> 32 == 0, "the runtime's memory is below 4 GiB");
    let (rcx, rdi): (u64, u64);
    // SAFETY: with the prefix, INSB writes 3 bytes at EDI = `dst` (inside `buf`); the high
    // halves of RDI and RCX are ignored by the CPU. DF is clear.
    unsafe {
        asm!(".byte 0x67, 0xf3, 0x6c", inout("rcx") (5u64 << 32) | 3 => rcx,
            inout("rdi") (0xdead_u64 << 32) | dst => rdi, in("dx") ABSENT_PORT, options(nostack));
    }
    ensure!(
        rcx == 0 && rdi == dst + 3,
        "after addr32 rep insb: rcx {rcx:#x}, rdi {rdi:#x} (start {dst:#x})"
    );
    ensure!(
        buf == [0, 0, 0xff, 0xff, 0xff, 0, 0, 0],
        "buffer holds {buf:x?}"
    );
    Ok(())
}

/// OUTS with an address-size prefix reads at ESI and leaves RSI zero-extended.
fn outs_addr32() -> TestResult {
    let buf = [0x5au8; 2];
    let src = buf.as_ptr() as u64;
    let rsi: u64;
    // SAFETY: OUTSB reads one byte at ESI = `src`; DF is clear.
    unsafe {
        asm!(".byte 0x67, 0x6e", inout("rsi") (0x77_u64 << 32) | src => rsi,
            in("dx") ABSENT_PORT, options(nostack));
    }
    ensure!(
        rsi == src + 1,
        "after addr32 outsb: rsi {rsi:#x} (start {src:#x})"
    );
    Ok(())
}
