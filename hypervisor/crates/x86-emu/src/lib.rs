//! Emulation of one guest x86 instruction that faulted on an emulated MMIO access.
//!
//! The hypervisor gets an EPT violation (VMX) or a nested page fault (SVM) on a
//! guest-physical page that a device model backs. It fetches the instruction bytes at the
//! guest's RIP and calls [`emulate`] with them, the CPU mode, the faulting guest-physical
//! address and two trait objects: [`Vcpu`] (registers, RFLAGS, RIP, segment bases) and
//! [`Memory`] (the device through `mmio_read`/`mmio_write`, ordinary guest memory by linear
//! address through `guest_read`/`guest_write`). [`emulate`] decodes with `iced-x86` and
//! either applies the instruction's architectural effects through the traits and advances
//! RIP, or returns an [`Error`] and changes no register (string instructions excepted, see
//! below; a device read made before a later step failed is not undone).
//!
//! # Emulated
//!
//! All forms in 16-, 32- and 64-bit code, operand sizes 8/16/32/64 as the encoding allows,
//! with operand-size (66), address-size (67), segment-override and REX prefixes:
//!
//! * `MOV r/m, reg`, `MOV reg, r/m`, `MOV r/m, imm`, `MOV AL/AX/EAX/RAX, moffs` and
//!   `MOV moffs, AL/AX/EAX/RAX` (A0–A3);
//! * `MOVZX`, `MOVSX`, `MOVSXD` with a memory source;
//! * `ADD OR ADC SBB AND SUB XOR CMP` in every form with a memory operand (memory as
//!   destination or as source), `TEST m, reg/imm`, `NEG NOT INC DEC m`;
//! * `BT BTS BTR BTC m, reg/imm8` (a register bit offset is signed and may address outside
//!   the operand, as on hardware);
//! * `XCHG m, reg` (implicitly locked), `XADD m, reg`, `CMPXCHG m, reg`;
//! * the `LOCK`-prefixed forms of the read-modify-write instructions above;
//! * `MOVS`, `STOS`, `LODS` (byte/word/dword/qword), with or without `REP` (`F3`; `F2` acts
//!   as `REP` on these as on hardware), either direction of RFLAGS.DF, address sizes 16/32/64
//!   (SI/ESI/RSI, DI/EDI/RDI and CX/ECX/RCX are used at that width).
//!
//! Status flags (CF PF AF ZF SF OF) follow the SDM. Where the SDM leaves a flag undefined:
//! the logical operations (`AND OR XOR TEST`) clear AF; `BT*` leave every flag but CF as it was.
//!
//! # Device view and atomicity
//!
//! A read-modify-write instruction does exactly one `mmio_read` followed by at most one
//! `mmio_write` of the same size and address, `LOCK`ed or not; a compare-only instruction
//! (`CMP`, `TEST`, `BT`) does one read and no write; `CMPXCHG` writes only when the comparison
//! succeeds (hardware's dummy write-back on failure is not passed on to the device). The caller
//! makes the read/write pair atomic against other vCPUs by holding the device's lock around
//! [`emulate`].
//!
//! # String instructions and REP
//!
//! One side of `MOVS` is the device, the other ordinary guest memory (if both are MMIO, the
//! source faults first: the fault's [`Access`] says which side faulted; the other side then
//! goes through `guest_read`/`guest_write`, whose implementation must route or refuse an
//! address that is MMIO too). A `REP` string instruction is emulated as a **bounded
//! batch**: iterations run while the count is non-zero and the device-side address stays
//! inside the faulting 4 KiB page. RSI/RDI/RCX
//! are updated after every iteration. If the count reaches zero, RIP is advanced
//! ([`Outcome::Completed`]); otherwise RIP stays on the instruction
//! ([`Outcome::RepPending`]) and the guest re-executes it, faulting again on the next MMIO
//! page or running natively on RAM. If an iteration fails (a `guest_read`/`guest_write`
//! fault, a device error) the registers describe the iterations completed before it, RIP
//! stays on the instruction, and the error is returned: that is the state in which hardware
//! delivers a fault in the middle of a `REP` string instruction.
//!
//! # Refused
//!
//! Everything else is [`Error::Unsupported`] with its mnemonic, in particular: SSE/AVX/x87
//! and MMX loads and stores (`MOVD`, `MOVQ`, `MOVDQA`, `MOVNTI`, `VMOVDQU`, ...), `CMPS`,
//! `SCAS`, `INS`, `OUTS`, `CMPXCHG8B`/`CMPXCHG16B`, `MOVBE`, `SETcc`, `POP m`/`PUSH m`,
//! segment-register, control-register and debug-register moves, shifts and rotates, and any
//! instruction with a register operand that is not a general-purpose register.
//!
//! Not checked, because hardware checked them before the access that faulted: segment
//! limits and types, CPL, alignment checks (later iterations of a string instruction and
//! its ordinary-memory side are not checked either; the caller's `guest_read`/`guest_write`
//! translate with the guest's permissions). The caller handles what happens after an
//! instruction retires (RFLAGS.TF single-step traps, RF, interrupt shadows).
//!
//! Memory operands that cross a 4 KiB page boundary are refused ([`Error::OutsideFaultPage`]):
//! the exit names one page, and the emulator has no way to learn where the other half goes.
//! Canonical checks on 64-bit linear addresses assume 4-level paging (48 bits).
//!
//! # Decoder build and cost
//!
//! iced-x86 1.22 with `default-features = false` and features `decoder`, `no_std`,
//! `no_evex`, `no_xop`, `no_d3now`: no formatter, encoder or instruction-info tables, and no
//! EVEX (AVX-512), XOP or 3DNow! decoding. Those encodings come back as
//! [`Error::UnsupportedEncoding`] rather than as invalid opcodes. Measured on
//! `x86_64-unknown-none`, release with `opt-level = 3`: the crate and iced add about
//! 79 KB of `.text` (about 9.5 KB of it this crate's code), 46 KB of `.rodata` and 1 KB of
//! `.data.rel.ro` to a binary; the decoder tables then take about 185 KiB of heap (see
//! [`warm_up`]). With EVEX decoding the figures
//! would be about 100 KB + 59 KB and 311 KiB of heap.
//!
//! # Feeding it from an exit
//!
//! * VMX, EPT violation (basic exit reason 48): [`MmioFault::gpa`] is the guest-physical
//!   address field; [`Access`] comes from exit-qualification bits 0/1. Bit 2 (instruction
//!   fetch) and bit 7 set with bit 8 clear (the access was the guest's own page walk) are
//!   not data accesses to emulate. The VM-exit instruction-length field is undefined for EPT
//!   violations: RIP advances by the decoded length, which [`Outcome`] reports. The bytes are
//!   fetched from guest memory at CS.base + RIP.
//! * SVM, nested page fault (exit code 0x400): EXITINFO2 is the guest-physical address,
//!   EXITINFO1 bit 1 the write flag; bit 4 (fetch) and bit 33 (guest page-table walk) are
//!   not data accesses. With DecodeAssists the VMCB holds the fetched byte count (offset
//!   0xD0) and up to 15 instruction bytes (0xD1); a count of 0 means fetch them from guest
//!   memory.
//! * Both: the mode from CR0.PE, EFER.LMA, RFLAGS.VM and CS's L and D/B attributes; the
//!   segment bases from the VMCS/VMCB guest-state areas.
//!
//! # Errors the caller must handle
//!
//! * [`Error::Fault`]: inject the exception into the guest (`#UD` for an undecodable
//!   instruction or `LOCK` on a form that cannot be locked, `#GP(0)` for an instruction
//!   longer than 15 bytes or a non-canonical address, whatever `#PF`/`#GP` the caller's own
//!   `guest_read`/`guest_write` returned).
//! * [`Error::Truncated`]: the caller supplied fewer bytes than the instruction needs (for
//!   example it stopped at a page boundary it could not read past). Supply 15 bytes
//!   whenever they are readable: with a shorter buffer iced also reports some invalid
//!   opcodes as truncated, because it looks for more bytes before giving up.
//! * [`Error::OutsideFaultPage`] and [`Error::NoMemoryOperand`]: the instruction does not
//!   access the faulting page (the guest changed the instruction under us, or the exit
//!   information is inconsistent): end the domain with a report.
//! * [`Error::Unsupported`] and [`Error::UnsupportedEncoding`]: a valid instruction this
//!   crate does not emulate: end the domain with a report naming it (or inject `#UD` if
//!   that is the policy).
//! * [`Error::Device`]: passed through from the caller's own `mmio_read`/`mmio_write`.
//! * [`Error::Ambiguous`]: a `MOVS` with no access kind whose both sides could be the
//!   faulting page.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alu;
#[cfg(test)]
mod tests;

use alu::{alu, mask, sign_extend, Op, CF, DF, STATUS};
pub use iced_x86::Mnemonic;
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, MemorySize, OpKind, Register};

/// The longest legal x86 instruction, in bytes.
pub const MAX_INSN_LEN: usize = 15;
const PAGE: u64 = 4096;

/// Index of RAX for [`Vcpu::gpr`]; the order is the encoding order RAX, RCX, RDX, RBX, RSP,
/// RBP, RSI, RDI, R8..R15.
pub const RAX: u8 = 0;
/// Index of RCX.
pub const RCX: u8 = 1;
/// Index of RSI.
pub const RSI: u8 = 6;
/// Index of RDI.
pub const RDI: u8 = 7;

/// The mode the guest's code segment executes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real mode or virtual-8086 mode (16-bit code, segment bases are `selector << 4`,
    /// which the caller supplies through [`Vcpu::segment_base`]).
    Real,
    /// Protected mode with CR0.PE set and EFER.LMA clear; `cs_d` is CS.D (32-bit default).
    Protected {
        /// CS.D: the code segment's default operand and address size is 32 bits.
        cs_d: bool,
    },
    /// IA-32e mode (EFER.LMA set): 64-bit mode if `cs_l`, else compatibility mode.
    Long {
        /// CS.L: 64-bit code.
        cs_l: bool,
        /// CS.D: 32-bit default size in compatibility mode.
        cs_d: bool,
    },
}

impl CpuMode {
    /// Code size in bits: 16, 32 or 64.
    pub fn bitness(self) -> u32 {
        match self {
            CpuMode::Long { cs_l: true, .. } => 64,
            CpuMode::Protected { cs_d: true } | CpuMode::Long { cs_d: true, .. } => 32,
            _ => 16,
        }
    }
}

/// A segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES
    Es,
    /// CS
    Cs,
    /// SS
    Ss,
    /// DS
    Ds,
    /// FS
    Fs,
    /// GS
    Gs,
}

/// Whether the faulting access was a read or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// VMX exit qualification bit 0 / SVM EXITINFO1 bit 1 clear.
    Read,
    /// VMX exit qualification bit 1 / SVM EXITINFO1 bit 1 set.
    Write,
    /// Not known; only `MOVS` needs it, and only when both of its addresses share the
    /// faulting address's page offset.
    Unknown,
}

/// What the exit reported about the faulting access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioFault {
    /// The faulting guest-physical address.
    pub gpa: u64,
    /// Read or write.
    pub access: Access,
}

/// An exception to inject into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// `#UD`: invalid opcode (includes `LOCK` on a form that cannot be locked).
    Ud,
    /// `#GP` with this error code.
    Gp(u16),
    /// `#SS` with this error code (a non-canonical stack-segment address).
    Ss(u16),
    /// `#PF` at this linear address with this error code (from the caller's translation).
    Pf {
        /// The linear address (CR2).
        linear: u64,
        /// The page-fault error code.
        error_code: u32,
    },
}

/// Why an instruction was not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A valid instruction this emulator does not handle.
    Unsupported(Mnemonic),
    /// Deliver this exception to the guest.
    Fault(Exception),
    /// Fewer bytes were supplied than the instruction needs.
    Truncated,
    /// A memory operand is not inside the faulting page (or does not cover the faulting
    /// address, or crosses the page's end).
    OutsideFaultPage {
        /// The operand's linear address.
        linear: u64,
        /// Its size in bytes.
        size: u8,
    },
    /// The instruction has no memory operand, so it cannot have caused the fault.
    NoMemoryOperand,
    /// `MOVS` whose source and destination could both be the faulting access.
    Ambiguous,
    /// An EVEX (AVX-512), XOP or 3DNow! instruction. iced is built without those tables
    /// (see the crate docs), so there is no mnemonic; like [`Error::Unsupported`], it is a
    /// valid instruction this emulator does not handle.
    UnsupportedEncoding,
    /// The device model refused the access; the code is the caller's own.
    Device(u32),
}

/// What [`emulate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction retired; RIP was advanced by `len`.
    Completed {
        /// Instruction length in bytes.
        len: u8,
    },
    /// A batch of a `REP` string instruction ran; the count is not zero yet, so RIP was left
    /// on the instruction for the guest to execute it again.
    RepPending {
        /// Instruction length in bytes.
        len: u8,
    },
}

/// The vCPU's register state as the emulator sees it.
pub trait Vcpu {
    /// A 64-bit general-purpose register by encoding index (0 = RAX ... 15 = R15).
    fn gpr(&self, index: u8) -> u64;
    /// Sets a general-purpose register (all 64 bits; the emulator merges partial writes).
    fn set_gpr(&mut self, index: u8, value: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS (the emulator changes only the status flags).
    fn set_rflags(&mut self, value: u64);
    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, value: u64);
    /// A segment's base address (ignored for ES/CS/SS/DS in 64-bit mode).
    fn segment_base(&self, seg: Segment) -> u64;
}

/// A register file kept in memory: the [`Vcpu`] for callers that hold the registers
/// themselves (the hypervisor's MMIO path, the host tests and the fuzz target).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    /// RAX ... R15 by encoding index.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    /// Segment bases by [`Segment`] index.
    pub seg: [u64; 6],
}

impl Vcpu for Registers {
    fn gpr(&self, index: u8) -> u64 {
        debug_assert!(index < 16, "register {index}");
        self.gpr[usize::from(index & 15)]
    }
    fn set_gpr(&mut self, index: u8, value: u64) {
        debug_assert!(index < 16, "register {index}");
        self.gpr[usize::from(index & 15)] = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn segment_base(&self, seg: Segment) -> u64 {
        self.seg[seg as usize]
    }
}

/// The device and guest memory.
pub trait Memory {
    /// Reads `size` (1, 2, 4 or 8) bytes from the device at `gpa`, little-endian.
    fn mmio_read(&mut self, gpa: u64, size: u8) -> Result<u64, Error>;
    /// Writes the low `size` bytes of `value` to the device at `gpa`.
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) -> Result<(), Error>;
    /// Reads ordinary guest memory at a linear address (the caller translates and checks;
    /// a failed translation is returned as the fault to inject).
    fn guest_read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes ordinary guest memory at a linear address.
    fn guest_write(&mut self, linear: u64, buf: &[u8]) -> Result<(), Error>;
}

/// Builds iced's decoder tables now. iced builds them on the heap at the first decode
/// (about 185 KiB in about 4,200 allocations, once, behind a spin `Once`); call this at boot,
/// with the heap ready, so that no MMIO exit allocates.
pub fn warm_up() {
    let _ = Decoder::new(64, &[0x90], DecoderOptions::NONE).decode();
}

/// Decodes the instruction in `bytes` (the first up to 15 bytes at the guest's RIP) and
/// emulates it against the MMIO access described by `fault`.
pub fn emulate(
    bytes: &[u8],
    mode: CpuMode,
    fault: MmioFault,
    cpu: &mut dyn Vcpu,
    mem: &mut dyn Memory,
) -> Result<Outcome, Error> {
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let bits = mode.bitness();
    let mut decoder = Decoder::with_ip(bits, bytes, cpu.rip(), DecoderOptions::NONE);
    let insn = decoder.decode();
    match decoder.last_error() {
        DecoderError::None => {}
        DecoderError::NoMoreBytes => return Err(Error::Truncated),
        // iced stops at 15 bytes: an instruction that runs into the limit is #GP(0).
        _ if insn.len() >= MAX_INSN_LEN => return Err(Error::Fault(Exception::Gp(0))),
        _ if undecoded_encoding(bytes, bits) => return Err(Error::UnsupportedEncoding),
        _ => return Err(Error::Fault(Exception::Ud)),
    }
    let mut e = Emu {
        insn,
        bits,
        fault,
        cpu,
        mem,
    };
    e.run()
}

/// Whether `bytes` start with an encoding iced is built without (EVEX, XOP, 3DNow!), which
/// it therefore reports as invalid.
fn undecoded_encoding(bytes: &[u8], bits: u32) -> bool {
    let legacy_prefix = |b: &u8| {
        matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
        )
    };
    let i = bytes
        .iter()
        .position(|b| !legacy_prefix(b))
        .unwrap_or(bytes.len());
    match (bytes.get(i), bytes.get(i + 1)) {
        // EVEX; outside 64-bit mode 62 with a memory ModRM is BOUND.
        (Some(0x62), Some(&b)) => bits == 64 || b >= 0xc0,
        // XOP's map field is 8 or more; POP r/m (8F /0) has 0-7 there.
        (Some(0x8f), Some(&b)) => b & 0x1f >= 8,
        // 3DNow!
        (Some(0x0f), Some(0x0f)) => true,
        _ => false,
    }
}

struct Emu<'a> {
    insn: Instruction,
    bits: u32,
    fault: MmioFault,
    cpu: &'a mut dyn Vcpu,
    mem: &'a mut dyn Memory,
}

/// (encoding index, size in bytes, bit shift) of a general-purpose register.
fn gpr(r: Register) -> Option<(u8, u8, u8)> {
    let n = r as u32;
    let rel = |base: Register| n.wrapping_sub(base as u32);
    if (Register::AL..=Register::R15L).contains(&r) {
        let i = rel(Register::AL) as u8;
        Some(match i {
            0..=3 => (i, 1, 0),
            4..=7 => (i - 4, 1, 8),
            _ => (i - 4, 1, 0),
        })
    } else if (Register::AX..=Register::R15W).contains(&r) {
        Some((rel(Register::AX) as u8, 2, 0))
    } else if (Register::EAX..=Register::R15D).contains(&r) {
        Some((rel(Register::EAX) as u8, 4, 0))
    } else if (Register::RAX..=Register::R15).contains(&r) {
        Some((rel(Register::RAX) as u8, 8, 0))
    } else {
        None
    }
}

fn mem_size(ms: MemorySize) -> Option<u8> {
    Some(match ms {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => return None,
    })
}

/// `old` with its low `size` bytes replaced by `v` as a register write of that width does
/// (a 32-bit write zero-extends).
fn merge(old: u64, v: u64, size: u8) -> u64 {
    match size {
        1 | 2 => (old & !mask(size)) | (v & mask(size)),
        4 => v & mask(4),
        _ => v,
    }
}

impl Emu<'_> {
    fn unsupported(&self) -> Error {
        Error::Unsupported(self.insn.mnemonic())
    }

    fn run(&mut self) -> Result<Outcome, Error> {
        let n = self.insn.op_count();
        for i in 0..n {
            if self.insn.op_kind(i) == OpKind::Register && gpr(self.insn.op_register(i)).is_none() {
                return Err(self.unsupported());
            }
        }
        use Mnemonic as M;
        let m = self.insn.mnemonic();
        match m {
            M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq => return self.string(),
            M::Mov | M::Movzx | M::Movsx | M::Movsxd => self.mov()?,
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                self.binop()?
            }
            M::Neg | M::Not | M::Inc | M::Dec => self.unop()?,
            M::Bt | M::Bts | M::Btr | M::Btc => self.bitop()?,
            M::Xchg | M::Xadd | M::Cmpxchg => self.exchange()?,
            _ => return Err(self.unsupported()),
        }
        Ok(self.retire())
    }

    /// Advances RIP past the instruction.
    fn retire(&mut self) -> Outcome {
        let len = self.insn.len() as u8;
        let ip_mask = match self.bits {
            64 => u64::MAX,
            32 => mask(4),
            _ => mask(2),
        };
        let rip = self.cpu.rip().wrapping_add(u64::from(len)) & ip_mask;
        self.cpu.set_rip(rip);
        Outcome::Completed { len }
    }

    fn read_reg(&self, r: Register) -> Result<u64, Error> {
        let (i, size, shift) = gpr(r).ok_or(self.unsupported())?;
        Ok((self.cpu.gpr(i) >> shift) & mask(size))
    }

    fn write_reg(&mut self, r: Register, v: u64) -> Result<(), Error> {
        let (i, size, shift) = gpr(r).ok_or(self.unsupported())?;
        let old = self.cpu.gpr(i);
        let new = if shift == 8 {
            (old & !0xff00) | ((v & 0xff) << 8)
        } else {
            merge(old, v, size)
        };
        self.cpu.set_gpr(i, new);
        Ok(())
    }

    fn set_status(&mut self, new: u64, which: u64) {
        let f = self.cpu.rflags();
        self.cpu.set_rflags((f & !which) | (new & which));
    }

    fn seg_base(&self, r: Register) -> u64 {
        let seg = match r {
            Register::ES => Segment::Es,
            Register::CS => Segment::Cs,
            Register::SS => Segment::Ss,
            Register::FS => Segment::Fs,
            Register::GS => Segment::Gs,
            _ => Segment::Ds,
        };
        if self.bits == 64 && !matches!(seg, Segment::Fs | Segment::Gs) {
            0
        } else {
            self.cpu.segment_base(seg)
        }
    }

    /// Linear address from a segment and an (already address-size-masked) offset.
    fn linear(&self, seg: Register, offset: u64) -> Result<u64, Error> {
        let lin = self.seg_base(seg).wrapping_add(offset);
        if self.bits != 64 {
            return Ok(lin & mask(4));
        }
        if sign_extend(lin, 6) != lin {
            return Err(Error::Fault(if seg == Register::SS {
                Exception::Ss(0)
            } else {
                Exception::Gp(0)
            }));
        }
        Ok(lin)
    }

    /// Linear address of the `Memory` operand `op`.
    fn mem_linear(&self, op: u32) -> Result<u64, Error> {
        let insn = &self.insn;
        let cpu = &*self.cpu;
        // Segment bases are applied by `linear` (iced would add them too): ask for 0 here.
        let ea = insn
            .virtual_address(op, 0, |r, _, _| match gpr(r) {
                Some((i, size, shift)) => Some((cpu.gpr(i) >> shift) & mask(size)),
                None => Some(0),
            })
            .ok_or(self.unsupported())?;
        self.linear(insn.memory_segment(), ea)
    }

    /// Guest-physical address of a `size`-byte access at `linear`, which must lie in the
    /// faulting page and (if `first`) cover the faulting address.
    fn mmio_gpa(&self, linear: u64, size: u8, first: bool) -> Result<u64, Error> {
        let off = linear & (PAGE - 1);
        let gpa = (self.fault.gpa & !(PAGE - 1)) | off;
        let end = off + u64::from(size);
        let covers = self.fault.gpa >= gpa && self.fault.gpa - gpa < u64::from(size);
        if end > PAGE || (first && !covers) {
            return Err(Error::OutsideFaultPage { linear, size });
        }
        Ok(gpa)
    }

    /// The index of the instruction's single `Memory` operand, its size and its
    /// guest-physical address.
    fn mem_operand(&self) -> Result<(u32, u8, u64), Error> {
        let op = (0..self.insn.op_count())
            .find(|&i| self.insn.op_kind(i) == OpKind::Memory)
            .ok_or(Error::NoMemoryOperand)?;
        let size = mem_size(self.insn.memory_size()).ok_or(self.unsupported())?;
        let gpa = self.mmio_gpa(self.mem_linear(op)?, size, true)?;
        Ok((op, size, gpa))
    }

    /// Value of a register or immediate operand, masked to `size`.
    fn value(&self, op: u32, size: u8) -> Result<u64, Error> {
        let v = match self.insn.op_kind(op) {
            OpKind::Register => self.read_reg(self.insn.op_register(op))?,
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => self.insn.immediate(op),
            _ => return Err(self.unsupported()),
        };
        Ok(v & mask(size))
    }

    fn mov(&mut self) -> Result<(), Error> {
        let (op, size, gpa) = self.mem_operand()?;
        if op == 0 {
            let v = self.value(1, size)?;
            return self.mem.mmio_write(gpa, size, v);
        }
        let v = self.mem.mmio_read(gpa, size)? & mask(size);
        let v = match self.insn.mnemonic() {
            Mnemonic::Movsx | Mnemonic::Movsxd => sign_extend(v, size),
            _ => v,
        };
        self.write_reg(self.insn.op_register(0), v)
    }

    fn binop(&mut self) -> Result<(), Error> {
        let (op, size, gpa) = self.mem_operand()?;
        let other = 1 - op;
        let mv = self.mem.mmio_read(gpa, size)? & mask(size);
        let ov = self.value(other, size)?;
        let (a, b) = if op == 0 { (mv, ov) } else { (ov, mv) };
        let (aop, write) = match self.insn.mnemonic() {
            Mnemonic::Add => (Op::Add, true),
            Mnemonic::Or => (Op::Or, true),
            Mnemonic::Adc => (Op::Adc, true),
            Mnemonic::Sbb => (Op::Sbb, true),
            Mnemonic::And => (Op::And, true),
            Mnemonic::Sub => (Op::Sub, true),
            Mnemonic::Xor => (Op::Xor, true),
            Mnemonic::Cmp => (Op::Sub, false),
            _ => (Op::And, false), // TEST
        };
        let (r, flags) = alu(aop, size, a, b, self.cpu.rflags());
        if write {
            if op == 0 {
                self.mem.mmio_write(gpa, size, r)?;
            } else {
                self.write_reg(self.insn.op_register(0), r)?;
            }
        }
        self.set_status(flags, STATUS);
        Ok(())
    }

    fn unop(&mut self) -> Result<(), Error> {
        let (_, size, gpa) = self.mem_operand()?;
        let a = self.mem.mmio_read(gpa, size)?;
        let (r, flags) = match self.insn.mnemonic() {
            Mnemonic::Not => ((!a) & mask(size), self.cpu.rflags()),
            Mnemonic::Neg => alu(Op::Neg, size, a, 0, self.cpu.rflags()),
            Mnemonic::Inc => alu(Op::Inc, size, a, 0, self.cpu.rflags()),
            _ => alu(Op::Dec, size, a, 0, self.cpu.rflags()),
        };
        self.mem.mmio_write(gpa, size, r)?;
        self.set_status(flags, STATUS);
        Ok(())
    }

    fn bitop(&mut self) -> Result<(), Error> {
        if self.insn.op_kind(0) != OpKind::Memory {
            return Err(Error::NoMemoryOperand);
        }
        let size = mem_size(self.insn.memory_size()).ok_or(self.unsupported())?;
        let bits = u64::from(size) * 8;
        let base = self.mem_linear(0)?;
        let (linear, bit) = if self.insn.op_kind(1) == OpKind::Register {
            // A register bit offset is signed and selects the operand-sized unit
            // `offset >> log2(bits)` away from the effective address.
            let off = sign_extend(self.value(1, size)?, size) as i64;
            let unit = off >> bits.trailing_zeros();
            let lin = base.wrapping_add((unit as u64).wrapping_mul(u64::from(size)));
            (
                if self.bits == 64 { lin } else { lin & mask(4) },
                (off as u64) & (bits - 1),
            )
        } else {
            (base, self.value(1, 1)? & (bits - 1))
        };
        let gpa = self.mmio_gpa(linear, size, true)?;
        let v = self.mem.mmio_read(gpa, size)?;
        let set = v >> bit & 1 != 0;
        let nv = match self.insn.mnemonic() {
            Mnemonic::Bts => Some(v | 1 << bit),
            Mnemonic::Btr => Some(v & !(1 << bit)),
            Mnemonic::Btc => Some(v ^ 1 << bit),
            _ => None,
        };
        if let Some(nv) = nv {
            self.mem.mmio_write(gpa, size, nv & mask(size))?;
        }
        self.set_status(if set { CF } else { 0 }, CF);
        Ok(())
    }

    fn exchange(&mut self) -> Result<(), Error> {
        let (op, size, gpa) = self.mem_operand()?;
        let reg = self.insn.op_register(1 - op);
        let rv = self.read_reg(reg)?;
        let mv = self.mem.mmio_read(gpa, size)? & mask(size);
        match self.insn.mnemonic() {
            Mnemonic::Xchg => {
                self.mem.mmio_write(gpa, size, rv)?;
                self.write_reg(reg, mv)
            }
            Mnemonic::Xadd => {
                let (sum, flags) = alu(Op::Add, size, mv, rv, self.cpu.rflags());
                self.mem.mmio_write(gpa, size, sum)?;
                self.write_reg(reg, mv)?;
                self.set_status(flags, STATUS);
                Ok(())
            }
            _ => {
                // CMPXCHG m, reg: compare the accumulator with m.
                let acc = self.cpu.gpr(RAX) & mask(size);
                let (_, flags) = alu(Op::Sub, size, acc, mv, self.cpu.rflags());
                if acc == mv {
                    self.mem.mmio_write(gpa, size, rv)?;
                } else {
                    let old = self.cpu.gpr(RAX);
                    self.cpu.set_gpr(RAX, merge(old, mv, size));
                }
                self.set_status(flags, STATUS);
                Ok(())
            }
        }
    }

    /// MOVS/STOS/LODS, one iteration or a bounded REP batch (see the crate docs).
    fn string(&mut self) -> Result<Outcome, Error> {
        let insn = self.insn;
        let size = mem_size(insn.memory_size()).ok_or(self.unsupported())?;
        let (mut src, mut dst) = (None, None);
        let mut asize = 0u8;
        for i in 0..insn.op_count() {
            let (a, is_src) = match insn.op_kind(i) {
                OpKind::MemorySegSI => (2, true),
                OpKind::MemorySegESI => (4, true),
                OpKind::MemorySegRSI => (8, true),
                OpKind::MemoryESDI => (2, false),
                OpKind::MemoryESEDI => (4, false),
                OpKind::MemoryESRDI => (8, false),
                _ => continue,
            };
            asize = a;
            if is_src {
                src = Some(insn.memory_segment());
            } else {
                dst = Some(Register::ES);
            }
        }
        if src.is_none() && dst.is_none() {
            // Same mnemonic, other instruction (SSE MOVSD).
            return Err(self.unsupported());
        }
        let am = mask(asize);
        let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
        let count = if rep { self.cpu.gpr(RCX) & am } else { 1 };
        if count == 0 {
            return Ok(self.retire());
        }
        let step = if self.cpu.rflags() & DF != 0 {
            u64::from(size).wrapping_neg()
        } else {
            u64::from(size)
        };
        let offset = |e: &Self, reg: u8| e.cpu.gpr(reg) & am;
        // Which side is the device: the source for a read fault, the destination for a write.
        let mmio_is_src = match (src, dst) {
            (Some(_), None) => true,
            (None, _) => false,
            (Some(s), Some(_)) => match self.fault.access {
                Access::Read => true,
                Access::Write => false,
                Access::Unknown => {
                    let s_ok = self
                        .mmio_gpa(self.linear(s, offset(self, RSI))?, size, true)
                        .is_ok();
                    let d_ok = self
                        .mmio_gpa(self.linear(Register::ES, offset(self, RDI))?, size, true)
                        .is_ok();
                    match (s_ok, d_ok) {
                        (true, true) => return Err(Error::Ambiguous),
                        (s_ok, _) => s_ok,
                    }
                }
            },
        };
        let mut done = 0u64;
        let mut page = None;
        while done < count {
            let s_lin = match src {
                Some(s) => Some(self.linear(s, offset(self, RSI))?),
                None => None,
            };
            let d_lin = match dst {
                Some(d) => Some(self.linear(d, offset(self, RDI))?),
                None => None,
            };
            let mmio_lin = if mmio_is_src { s_lin } else { d_lin }.unwrap_or_default();
            let gpa = match page {
                None => {
                    page = Some(mmio_lin & !(PAGE - 1));
                    self.mmio_gpa(mmio_lin, size, true)?
                }
                Some(p) => match self.mmio_gpa(mmio_lin, size, false) {
                    Ok(g) if mmio_lin & !(PAGE - 1) == p => g,
                    _ => break, // the device side left the faulting page: end of batch
                },
            };
            let mut buf = [0u8; 8];
            let bytes = &mut buf[..usize::from(size)];
            match (s_lin, d_lin) {
                (Some(_), Some(d)) if mmio_is_src => {
                    let v = self.mem.mmio_read(gpa, size)?;
                    bytes.copy_from_slice(&v.to_le_bytes()[..usize::from(size)]);
                    self.mem.guest_write(d, bytes)?;
                }
                (Some(s), Some(_)) => {
                    self.mem.guest_read(s, bytes)?;
                    let mut le = [0u8; 8];
                    le[..usize::from(size)].copy_from_slice(bytes);
                    self.mem.mmio_write(gpa, size, u64::from_le_bytes(le))?;
                }
                (Some(_), None) => {
                    let v = self.mem.mmio_read(gpa, size)?;
                    let old = self.cpu.gpr(RAX);
                    self.cpu.set_gpr(RAX, merge(old, v, size));
                }
                _ => {
                    let v = self.cpu.gpr(RAX) & mask(size);
                    self.mem.mmio_write(gpa, size, v)?;
                }
            }
            // The iteration is architecturally done: commit its register updates.
            for (side, reg) in [(s_lin, RSI), (d_lin, RDI)] {
                if side.is_some() {
                    let old = self.cpu.gpr(reg);
                    self.cpu
                        .set_gpr(reg, merge(old, old.wrapping_add(step), asize));
                }
            }
            if rep {
                let old = self.cpu.gpr(RCX);
                self.cpu
                    .set_gpr(RCX, merge(old, old.wrapping_sub(1), asize));
            }
            done += 1;
        }
        if done == count {
            Ok(self.retire())
        } else {
            Ok(Outcome::RepPending {
                len: insn.len() as u8,
            })
        }
    }
}
