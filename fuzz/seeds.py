#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/seed-*.

Run from the repository root: python3 fuzz/seeds.py. The fuzzer adds the minimized
inputs it finds next to these (named by content hash)."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def pad8(b):
    return b + b"\0" * (-len(b) % 8)


# ---- multiboot2 ----
def mb2_tag(ty, body):
    return pad8(struct.pack("<II", ty, 8 + len(body)) + body)


def mb2(tags):
    body = b"".join(tags) + struct.pack("<II", 0, 8)
    return struct.pack("<II", 8 + len(body), 0) + body


mmap = struct.pack("<II", 24, 0) + b"".join(
    struct.pack("<QQII", b, l, t, 0)
    for b, l, t in [(0, 0x9FC00, 1), (0xF0000, 0x10000, 2), (0x100000, 0x3FEE0000, 1), (0x3FFE0000, 0x20000, 3)]
)
full = mb2([
    mb2_tag(1, b"loglvl=debug dom0_mem=512M\0"),
    mb2_tag(2, b"GRUB 2.06\0"),
    mb2_tag(3, struct.pack("<II", 0x800000, 0x801234) + b"vmlinuz console=hvc0\0"),
    mb2_tag(3, struct.pack("<II", 0x900000, 0x980000) + b"initrd.img\0"),
    mb2_tag(6, mmap),
])
put("mb2", "grub", full)
put("mb2", "mmap-only", mb2([mb2_tag(6, mmap)]))
put("mb2", "no-mmap", mb2([mb2_tag(1, b"x\0")]))

# ---- multiboot1: block at 0, strings and tables behind it ----
def mb1(flags, cmdline=b"", name=b"", mmap_entries=(), mods=()):
    blob = bytearray(0x400)
    struct.pack_into("<I", blob, 0, flags)
    struct.pack_into("<II", blob, 4, 639, 0x3FF00)
    struct.pack_into("<I", blob, 16, 0x100)
    blob[0x100:0x100 + len(cmdline)] = cmdline
    struct.pack_into("<I", blob, 64, 0x180)
    blob[0x180:0x180 + len(name)] = name
    mm = b"".join(struct.pack("<IQQI", 20, b, l, t) for b, l, t in mmap_entries)
    struct.pack_into("<II", blob, 44, len(mm), 0x200)
    blob[0x200:0x200 + len(mm)] = mm
    md = b"".join(struct.pack("<IIII", s, e, 0x1C0, 0) for s, e in mods)
    struct.pack_into("<II", blob, 20, len(mods), 0x300)
    blob[0x300:0x300 + len(md)] = md
    blob[0x1C0:0x1C8] = b"bzImage\0"
    return bytes(blob)


put("mb1", "qemu", mb1(0x1 | 0x4 | 0x8 | 0x40 | 0x200, b"console=com1 loglvl=all\0", b"qemu\0",
                       [(0, 0x9FC00, 1), (0x100000, 0x7EE0000, 1), (0xFFFC0000, 0x40000, 2)],
                       [(0x200000, 0x300000), (0x400000, 0x410000)]))
put("mb1", "mem-only", mb1(0x1))
put("mb1", "mmap-big", mb1(0x40, mmap_entries=[(0, 0xFFFFFFFFFFFFFFFF, 1), (1 << 63, 1 << 63, 1)]))

# ---- xl.cfg ----
put("xlcfg", "domu", b"""# a PVH guest
name = "guest1"
type = "pvh"
kernel = "/boot/vmlinuz"
ramdisk = '/boot/initrd.img'
cmdline = "console=hvc0 root=/dev/xvda1\\n"
memory = 512
maxmem = 0x400
vcpus = 2; maxvcpus = 4
cpus = "0-3,^1"
uuid = "6d2a3f5c-1b7e-4c89-9a0f-2e3d4c5b6a79"
on_crash = "preserve"
disk = [ 'format=raw, vdev=xvda, access=rw, target=/dev/vg/guest1',
         '/srv/img.raw,raw,xvdb1,ro', ]
vif = [ 'mac=00:16:3e:01:02:03,bridge=xenbr0,ip=10.0.0.2', "" ]
vif += [ 'vifname=eth7' ]
extra = "\\x41\\101\\t"
\0name=other
memory=256
""")
put("xlcfg", "lists", b"nested = [ [1, [2, [3]]], 'x', ]\nx += 7 ; y = [\n]\n")
put("xlcfg", "minimal", b'name="a"\nkernel="k"\n')

# ---- xenstore wire: a few requests back to back ----
def msg(ty, payload, req=1, tx=0):
    return struct.pack("<IIII", ty, req, tx, len(payload)) + payload


put("xenstore_wire", "requests", b"\x05" + msg(2, b"/local/domain/0/name\0") + msg(11, b"device/vif/0/state\x004\0", 2)
    + msg(4, b"@releaseDomain\0tok\0", 3) + msg(3, b"data/\0", 4, 7) + msg(7, b"/local\0n0\0r1\0b2\0", 5))
put("xenstore_wire", "too-long", b"\x01" + struct.pack("<IIII", 1, 1, 0, 4097))
put("xenstore_wire", "partial", b"\x02" + msg(1, b"abc")[:-1])

# ---- PVH ELF: one PT_LOAD holding the entry, one PT_NOTE with Xen notes ----
def note(name, ty, desc):
    return struct.pack("<III", len(name), len(desc), ty) + pad4(name) + pad4(desc)


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def elf64(paddr=0x100000, code=b"\xf4" * 64, bss=0x1000, notes=None, machine=62):
    if notes is None:
        notes = (note(b"Xen\0", 18, struct.pack("<I", paddr)) + note(b"Xen\0", 6, b"linux\0")
                 + note(b"Xen\0", 9, struct.pack("<Q", 0)) + note(b"GNU\0", 3, b"\0" * 8))
    phoff, phnum = 64, 2
    load_off = phoff + 56 * phnum
    note_off = load_off + len(code)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
            + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, paddr, phoff, 0, 0, 64, 56, phnum, 64, 0, 0))
    ph_load = struct.pack("<IIQQQQQQ", 1, 7, load_off, 0xFFFFFFFF80000000 + paddr, paddr, len(code), len(code) + bss, 0x1000)
    ph_note = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(notes), len(notes), 4)
    return ehdr + ph_load + ph_note + code + notes


def elf32(paddr=0x100000, code=b"\xf4" * 32):
    notes = note(b"Xen\0", 18, struct.pack("<I", paddr))
    phoff, phnum = 52, 2
    load_off = phoff + 32 * phnum
    note_off = load_off + len(code)
    ehdr = (b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8
            + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, paddr, phoff, 0, 0, 52, 32, phnum, 40, 0, 0))
    ph_load = struct.pack("<IIIIIIII", 1, load_off, paddr, paddr, len(code), len(code) + 0x100, 5, 0x1000)
    ph_note = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(notes), len(notes), 4, 4)
    return ehdr + ph_load + ph_note + code + notes


put("pvh_elf", "elf64", elf64())
put("pvh_elf", "elf32", elf32())
put("pvh_elf", "no-pvh-note", elf64(notes=note(b"Xen\0", 6, b"linux\0")))

# ---- XZ (x86 BCJ + LZMA2, small dictionary, as Linux builds its payload) ----
import lzma

XZ_FILTERS = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}]


def xz(data, check=lzma.CHECK_CRC32):
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=check, filters=XZ_FILTERS)


put("xz", "elf", b"\x07" + xz(elf64()))
put("xz", "text-crc64", b"\x06" + xz(b"ferrovisor " * 300, lzma.CHECK_CRC64))
put("xz", "small-out", b"\x02" + xz(bytes(range(256)) * 4, lzma.CHECK_NONE))
put("xz", "empty", b"\x05" + xz(b""))


# ---- bzImage: setup sectors, then the protected-mode part holding the XZ payload ----
def bzimage(payload, setup_sects=1, version=0x020F):
    pm = ((setup_sects or 4) + 1) * 512
    img = bytearray(pm)
    img[0x1F1] = setup_sects
    struct.pack_into("<H", img, 0x1FE, 0xAA55)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    struct.pack_into("<H", img, 0x236, 1)  # XLF_KERNEL_64
    struct.pack_into("<II", img, 0x248, 0x40, len(payload))
    struct.pack_into("<Q", img, 0x258, 0x1000000)
    struct.pack_into("<I", img, 0x260, 0x200000)
    return bytes(img) + b"\0" * 0x40 + payload + b"\0" * 16


kernel = elf64()
put("bzimage", "xz-elf", bzimage(xz(kernel) + struct.pack("<I", len(kernel))))
put("bzimage", "gzip", bzimage(b"\x1f\x8b\x08\0" + b"\0" * 32))
put("bzimage", "old-protocol", bzimage(b"\x00" * 16, setup_sects=0, version=0x0206))

# ---- ACPI: config bytes (see fuzz/targets/src/acpi.rs) ----
put("acpi", "one-vcpu", bytes([0, 1, 0, 0, 0x00, 0x00, 0x0E, 0x00, 0, 0]))
put("acpi", "x2apic", bytes([210]) + struct.pack("<H", 300) + b"\x01" + b"OEMIDXTABLEID0" + b"\1\0\0\0CRTR\2\0\0\0"
    + b"\x00" + struct.pack("<I", 0xE0000) + b"\x02\x05\xa5")
put("acpi", "top-of-4g", bytes([0, 4, 0, 1]) + struct.pack("<H", 0x100) + b"\x00\x00")
put("acpi", "bad-base", bytes([0, 2, 0, 2]) + struct.pack("<I", 0x1001) + b"\x00\x00")

# ---- x86-emu: see fuzz/targets/src/x86emu.rs for the layout ----
def emu(mode, insn, regs=None, access=0, gpa_off=0, rflags=0x202, switches=0):
    regs = regs or {}
    out = bytes([mode, access]) + struct.pack("<HH", gpa_off, rflags) + bytes([switches])
    out += insn.ljust(15, b"\x90")
    for i in range(16):
        out += b"\x00" + struct.pack("<H", regs.get(i, 0))
    return out + struct.pack("<Q", 0x1122334455667788)


RCX, RSI, RDI = 1, 6, 7
put("x86_emu", "mov-load", emu(4, b"\x8b\x03"))
put("x86_emu", "mov-store-imm", emu(4, b"\xc7\x43\x10\x78\x56\x34\x12", gpa_off=0x10, access=1))
put("x86_emu", "lock-xadd", emu(4, b"\xf0\x0f\xc1\x03", access=1))
put("x86_emu", "cmpxchg", emu(2, b"\x0f\xb1\x0b", access=1))
put("x86_emu", "bt-reg", emu(4, b"\x48\x0f\xa3\x03", {0: 0x45}, gpa_off=8))
put("x86_emu", "rep-movsb-read", emu(4, b"\xf3\xa4", {RCX: 16, RSI: 0x20, RDI: 0x800}, gpa_off=0x20))
put("x86_emu", "rep-stosd-write", emu(4, b"\xf3\xab", {RCX: 2000, RDI: 0xff0}, access=1, gpa_off=0xff0))
put("x86_emu", "real-mode", emu(0, b"\x8b\x00", {3: 0x10, 6: 0x20}, gpa_off=0x30))
put("x86_emu", "add-rm-reg-16", emu(1, b"\x01\x07", {0: 5, 3: 0x44}, gpa_off=0x44, access=1))
put("x86_emu", "movzx", emu(3, b"\x0f\xb6\x03", {3: 0x7ff}, gpa_off=0x7ff))

# ---- event channels: op sequences (see fuzz/targets/src/evtchn.rs) ----
cfg = bytes([1, 0, 0, 3, 3, 4])  # dom0: 2 vCPUs, all ports; dom1: 1 vCPU, 63; dom2: 4 vCPUs, 5
pair = bytes([0, 0, 3, 0, 1]) + bytes([1, 1, 0, 0, 0, 1]) + bytes([1, 5, 0, 1]) + bytes([0, 5, 0, 1])
put("evtchn", "interdomain", cfg + pair + bytes([0, 4, 0, 1]) + bytes([1, 5, 0, 1]) + bytes([1, 4, 0, 1]))
put("evtchn", "ipi-virq-poll", cfg + bytes([0, 3, 0]) + bytes([0, 5, 0, 1]) + bytes([0, 2, 0, 0])
    + bytes([0, 11, 0, 0, 0, 0]) + bytes([0, 10, 0, 1, 0, 2]) + bytes([0, 12, 0, 1, 0, 0]) + bytes([0, 8, 0, 1])
    + bytes([0, 7, 0, 1, 1]) + bytes([0, 15, 0]))
put("evtchn", "destroy-and-reset", cfg + pair + bytes([0, 13, 1]) + bytes([0, 6, 3, 0, 1]) + bytes([1, 0, 3, 0, 0])
    + bytes([0, 9, 0, 1, 1]) + bytes([2, 0, 3, 0, 0, 0, 0, 0, 1, 2, 1, 3, 0, 0, 0, 1]))

# ---- grant tables: op sequences (see fuzz/targets/src/grant.rs) ----
gcfg = bytes([1, 0, 2, 1, 0, 0])  # maptrack limits
grant_ro = bytes([1, 0, 0, 1, 0, 1, 0])  # dom1 grants gref 0 to dom0 (PERMIT_ACCESS)
grant_rw = bytes([1, 0, 1, 0, 0, 1, 0])
put("grant", "map-unmap", gcfg + grant_ro + grant_rw + bytes([0, 1, 1, 0, 0]) + bytes([0, 1, 1, 0, 1])
    + bytes([0, 2, 1, 1, 1]) + bytes([0, 3, 0, 0]) + bytes([0, 4, 0, 1]) + bytes([0, 3, 0, 2]))
put("grant", "copy-teardown", gcfg + grant_ro + bytes([0, 1, 1, 0, 1]) + bytes([0, 5, 0, 1, 0, 2, 1]) + struct.pack("<Q", 0)
    + bytes([1, 1]) + bytes([0, 6]) + bytes([2, 7]) + struct.pack("<IH", 0x00010009, 1) + bytes([1, 1, 1, 1]))

# ---- xenstore core: request sequences (see fuzz/targets/src/xenstore_core.rs) ----
xs_setup = bytes([8]) + bytes([0, 8, 2, 3, 13, 25, 16, 1]) + bytes([0, 12, 2, 1, 1, 1]) + bytes([0, 14, 2, 2, 1, 18, 1])
put("xenstore_core", "domu-session", xs_setup + bytes([2, 11, 2, 2, 4, 16, 1]) + bytes([2, 4, 2, 2, 3, 23, 1])
    + bytes([2, 6, 2, 1, 24, 1]) + bytes([2, 11, 0, 1, 2, 5, 13, 1]) + bytes([2, 7, 0, 1, 1, 21, 1])
    + bytes([2, 2, 2, 1, 5, 1]) + bytes([2, 1, 2, 1, 3, 1]) + bytes([2, 3, 2, 1, 3, 1]) + bytes([2, 21, 2, 2, 3, 15, 1]))
put("xenstore_core", "dom0-and-release", xs_setup + bytes([0, 4, 2, 2, 11, 23, 1]) + bytes([0, 4, 2, 2, 12, 23, 1])
    + bytes([0, 13, 2, 1, 0, 1]) + bytes([1, 11, 2, 2, 7, 13, 1]) + bytes([0, 10, 2, 1, 13, 1]) + bytes([0, 17, 2, 1, 13, 1])
    + bytes([251, 1]) + bytes([252, 1]) + bytes([0, 9, 2, 1, 13, 1]) + bytes([0, 20, 2, 0, 1]))

# ---- x86-emu ALU: op, size, a, b, rflags ----
for i, (op, size, a, b, fl) in enumerate([(0, 0, 0x7F, 1, 0), (1, 3, 2**64 - 1, 1, 1), (2, 1, 0, 1, 0), (3, 2, 0x80000000, 1, 1),
                                          (4, 0, 0xF0, 0x0F, 0xFFF), (7, 1, 0x7FFF, 0, 1), (8, 2, 0, 0, 0), (9, 3, 2**63, 0, 0)]):
    put("x86_alu", f"op{i}", bytes([op, size]) + struct.pack("<QQQ", a, b, fl))
