//! Decoding of the instructions behind SVM control-register write intercepts: MOV to CRn
//! (`0F 22 /r`, with AMD's `LOCK MOV CR0` = CR8), LMSW (`0F 01 /6`, register or memory
//! operand) and CLTS (`0F 06`). SVM reports which register but, without decode assists
//! (QEMU offers none), neither the source nor the length, so the backend reads the bytes
//! at RIP and decodes them here. Pure, host-tested.

/// How the instruction addresses its LMSW memory operand: `seg` (0 ES, 1 CS, 2 SS, 3 DS,
/// 4 FS, 5 GS) + `base` + `index` * `scale` + `disp`, truncated to `addr_bits`; in 64-bit
/// mode `rip_relative` adds the address of the next instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    pub seg: u8,
    pub base: Option<u8>,
    pub index: Option<u8>,
    pub scale: u8,
    pub disp: i64,
    pub addr_bits: u32,
    pub rip_relative: bool,
}

/// LMSW's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A general-purpose register (0 RAX ... 15 R15), low 16 bits.
    Reg(u8),
    Mem(MemOperand),
}

/// A decoded control-register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrWrite {
    /// MOV to CR`cr` from general-purpose register `gpr`.
    MovTo {
        cr: u8,
        gpr: u8,
    },
    Lmsw(Source),
    Clts,
}

/// What the decoder needs to know of the code segment: 64-bit mode (EFER.LMA and CS.L),
/// else whether the default operand/address size is 32 bits (CS.D, clear in real mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub long: bool,
    pub big: bool,
}

/// Decodes `bytes` (what was fetched at RIP, up to 15); returns the instruction and its
/// length, or None if it is not a control-register write this module knows.
pub fn decode(bytes: &[u8], code: Code) -> Option<(CrWrite, usize)> {
    let mut i = 0;
    let mut seg = None;
    let mut addr_override = false;
    let mut lock = false;
    let mut rex = 0u8;
    loop {
        let b = *bytes.get(i)?;
        match b {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {
                seg = Some(match b {
                    0x26 => 0,
                    0x2e => 1,
                    0x36 => 2,
                    0x3e => 3,
                    0x64 => 4,
                    _ => 5,
                });
                rex = 0;
            }
            0x66 | 0xf2 | 0xf3 => rex = 0,
            0x67 => {
                addr_override = true;
                rex = 0;
            }
            0xf0 => {
                lock = true;
                rex = 0;
            }
            0x40..=0x4f if code.long => rex = b,
            _ => break,
        }
        i += 1;
        if i >= 15 {
            return None;
        }
    }
    if *bytes.get(i)? != 0x0f {
        return None;
    }
    let op = *bytes.get(i + 1)?;
    if op == 0x06 {
        return Some((CrWrite::Clts, i + 2));
    }
    let modrm = *bytes.get(i + 2)?;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    let md = modrm >> 6;
    let rex_r = (rex >> 2) & 1;
    let rex_x = (rex >> 1) & 1;
    let rex_b = rex & 1;
    match op {
        0x22 => {
            // The mod field is ignored: the source is always a register.
            let mut cr = reg | rex_r << 3;
            if lock && cr == 0 {
                cr = 8;
            }
            let len = i + 3;
            (len <= 15).then_some((
                CrWrite::MovTo {
                    cr,
                    gpr: rm | rex_b << 3,
                },
                len,
            ))
        }
        0x01 if reg == 6 => {
            if md == 3 {
                return Some((CrWrite::Lmsw(Source::Reg(rm | rex_b << 3)), i + 3));
            }
            let addr_bits = address_size(code, addr_override);
            let mut p = i + 3;
            let mut m = MemOperand {
                seg: 3,
                base: None,
                index: None,
                scale: 1,
                disp: 0,
                addr_bits,
                rip_relative: false,
            };
            let disp_len;
            if addr_bits == 16 {
                // BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP (disp16 alone if mod 0), BX.
                let (base, index) = match rm {
                    0 => (Some(3), Some(6)),
                    1 => (Some(3), Some(7)),
                    2 => (Some(5), Some(6)),
                    3 => (Some(5), Some(7)),
                    4 => (Some(6), None),
                    5 => (Some(7), None),
                    6 if md == 0 => (None, None),
                    6 => (Some(5), None),
                    _ => (Some(3), None),
                };
                m.base = base;
                m.index = index;
                if base == Some(5) {
                    m.seg = 2;
                }
                disp_len = match md {
                    0 if rm == 6 => 2,
                    0 => 0,
                    1 => 1,
                    _ => 2,
                };
            } else {
                let mut base_low = rm;
                if rm == 4 {
                    let sib = *bytes.get(p)?;
                    p += 1;
                    let index = ((sib >> 3) & 7) | rex_x << 3;
                    m.index = (index != 4).then_some(index);
                    m.scale = 1 << (sib >> 6);
                    base_low = sib & 7;
                    if base_low == 5 && md == 0 {
                        m.base = None;
                    } else {
                        m.base = Some(base_low | rex_b << 3);
                    }
                } else if rm == 5 && md == 0 {
                    m.rip_relative = code.long;
                } else {
                    m.base = Some(rm | rex_b << 3);
                }
                if matches!(m.base, Some(4) | Some(5)) {
                    m.seg = 2; // RSP/RBP-based: SS
                }
                disp_len = match md {
                    0 if base_low == 5 => 4,
                    0 => 0,
                    1 => 1,
                    _ => 4,
                };
            }
            let d = bytes.get(p..p + disp_len)?;
            m.disp = match disp_len {
                0 => 0,
                1 => i64::from(d[0] as i8),
                2 => i64::from(i16::from_le_bytes([d[0], d[1]])),
                _ => i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            };
            p += disp_len;
            if let Some(s) = seg {
                m.seg = s;
            }
            (p <= 15).then_some((CrWrite::Lmsw(Source::Mem(m)), p))
        }
        _ => None,
    }
}

/// The legacy prefixes in front of an instruction that matter to string I/O: whether an
/// address-size prefix (0x67) is present, and the last segment override (0 ES ... 5 GS).
/// Scanning stops at the first byte that is not a prefix (REX only in 64-bit code).
pub fn string_prefixes(bytes: &[u8], long: bool) -> (bool, Option<u8>) {
    let mut addr = false;
    let mut seg = None;
    for &b in bytes.iter().take(15) {
        match b {
            0x26 => seg = Some(0),
            0x2e => seg = Some(1),
            0x36 => seg = Some(2),
            0x3e => seg = Some(3),
            0x64 => seg = Some(4),
            0x65 => seg = Some(5),
            0x67 => addr = true,
            0x66 | 0xf0 | 0xf2 | 0xf3 => {}
            0x40..=0x4f if long => {}
            _ => break,
        }
    }
    (addr, seg)
}

/// The address size in bits of an instruction in code of this shape, with or without an
/// address-size prefix.
pub const fn address_size(code: Code, prefix: bool) -> u32 {
    match (code.long, code.big, prefix) {
        (true, _, false) => 64,
        (true, _, true) | (false, true, false) | (false, false, true) => 32,
        (false, true, true) | (false, false, false) => 16,
    }
}

/// The effective (segment-relative) address of `m`, given the registers (`gpr(n)`) and
/// the address of the next instruction (for RIP-relative operands).
pub fn effective_address(m: &MemOperand, gpr: impl Fn(u8) -> u64, next_rip: u64) -> u64 {
    let mut a = m.disp as u64;
    if let Some(b) = m.base {
        a = a.wrapping_add(gpr(b));
    }
    if let Some(x) = m.index {
        a = a.wrapping_add(gpr(x).wrapping_mul(u64::from(m.scale)));
    }
    if m.rip_relative {
        a = a.wrapping_add(next_rip);
    }
    match m.addr_bits {
        16 => a & 0xffff,
        32 => a & 0xffff_ffff,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L64: Code = Code {
        long: true,
        big: false,
    };
    const P32: Code = Code {
        long: false,
        big: true,
    };
    const R16: Code = Code {
        long: false,
        big: false,
    };

    #[test]
    fn mov_to_cr() {
        // mov cr4, rax
        assert_eq!(
            decode(&[0x0f, 0x22, 0xe0], L64),
            Some((CrWrite::MovTo { cr: 4, gpr: 0 }, 3))
        );
        // mov cr3, r9 (REX.B)
        assert_eq!(
            decode(&[0x41, 0x0f, 0x22, 0xd9], L64),
            Some((CrWrite::MovTo { cr: 3, gpr: 9 }, 4))
        );
        // mov cr8, rax (REX.R)
        assert_eq!(
            decode(&[0x44, 0x0f, 0x22, 0xc0], L64),
            Some((CrWrite::MovTo { cr: 8, gpr: 0 }, 4))
        );
        // A REX byte is an ordinary opcode (inc/dec) outside 64-bit mode.
        assert_eq!(decode(&[0x41, 0x0f, 0x22, 0xd9], P32), None);
        // lock mov cr0, eax: CR8 on AMD
        assert_eq!(
            decode(&[0xf0, 0x0f, 0x22, 0xc0], P32),
            Some((CrWrite::MovTo { cr: 8, gpr: 0 }, 4))
        );
        // mov cr0, ebx with a (meaningless) operand-size prefix, mod bits ignored
        assert_eq!(
            decode(&[0x66, 0x0f, 0x22, 0x03], R16),
            Some((CrWrite::MovTo { cr: 0, gpr: 3 }, 4))
        );
        assert_eq!(decode(&[0x0f, 0x20, 0xe0], L64), None, "MOV from CR");
        assert_eq!(decode(&[0x0f, 0x22], L64), None, "truncated");
        assert_eq!(decode(&[0x66; 15], L64), None, "prefixes only");
    }

    #[test]
    fn string_io_prefixes() {
        // rep insb / addr32 rep insb / fs rep outsd with REX.W in 64-bit code
        assert_eq!(string_prefixes(&[0xf3, 0x6c], true), (false, None));
        assert_eq!(string_prefixes(&[0x67, 0xf3, 0x6c], true), (true, None));
        assert_eq!(
            string_prefixes(&[0x64, 0xf3, 0x48, 0x6f], true),
            (false, Some(4))
        );
        // 0x48 is DEC EAX outside 64-bit mode: scanning stops there.
        assert_eq!(string_prefixes(&[0x48, 0x67, 0x6c], false), (false, None));
        assert_eq!(address_size(L64, true), 32);
        assert_eq!(address_size(P32, true), 16);
        assert_eq!(address_size(R16, true), 32);
        assert_eq!(address_size(R16, false), 16);
    }

    #[test]
    fn clts_and_lmsw() {
        assert_eq!(decode(&[0x0f, 0x06], R16), Some((CrWrite::Clts, 2)));
        // lmsw ax / lmsw r10w
        assert_eq!(
            decode(&[0x0f, 0x01, 0xf0], R16),
            Some((CrWrite::Lmsw(Source::Reg(0)), 3))
        );
        assert_eq!(
            decode(&[0x41, 0x0f, 0x01, 0xf2], L64),
            Some((CrWrite::Lmsw(Source::Reg(10)), 4))
        );
        // smsw is not a write
        assert_eq!(decode(&[0x0f, 0x01, 0xe0], L64), None);
    }

    #[test]
    fn lmsw_memory_operands() {
        let regs = |n: u8| u64::from(n) * 0x100;
        // 16-bit: lmsw [bp+si+4] -> SS, 0x500 + 0x600 + 4
        let (w, len) = decode(&[0x0f, 0x01, 0x72, 0x04], R16).unwrap();
        assert_eq!(len, 4);
        let CrWrite::Lmsw(Source::Mem(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!((m.seg, m.addr_bits), (2, 16));
        assert_eq!(effective_address(&m, regs, 0), 0xb04);
        // 16-bit: lmsw [0x1234] with ES override
        let (w, len) = decode(&[0x26, 0x0f, 0x01, 0x36, 0x34, 0x12], R16).unwrap();
        assert_eq!(len, 6);
        let CrWrite::Lmsw(Source::Mem(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!(m.seg, 0);
        assert_eq!(effective_address(&m, regs, 0), 0x1234);
        // 32-bit: lmsw [eax + ecx*4 - 8] (SIB, disp8)
        let (w, len) = decode(&[0x0f, 0x01, 0x74, 0x88, 0xf8], P32).unwrap();
        assert_eq!(len, 5);
        let CrWrite::Lmsw(Source::Mem(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!(effective_address(&m, regs, 0), 0x400 - 8);
        // 64-bit: lmsw [rip + 0x10]
        let (w, len) = decode(&[0x0f, 0x01, 0x35, 0x10, 0, 0, 0], L64).unwrap();
        assert_eq!(len, 7);
        let CrWrite::Lmsw(Source::Mem(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!(effective_address(&m, regs, 0x1000), 0x1010);
        // 64-bit with 0x67: lmsw [esp] (SIB, no index) -> SS, 32-bit wrap
        let (w, _) = decode(&[0x67, 0x0f, 0x01, 0x34, 0x24], L64).unwrap();
        let CrWrite::Lmsw(Source::Mem(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!((m.seg, m.addr_bits, m.index), (2, 32, None));
        assert_eq!(effective_address(&m, |_| 0x1_0000_0010, 0), 0x10);
    }
}
