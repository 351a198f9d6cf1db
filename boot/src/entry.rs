//! Boot headers and the 32-bit to 64-bit trampoline.
//!
//! Both multiboot loaders enter `ferrovisor_start32` in 32-bit protected mode with paging
//! off, EAX holding the loader magic and EBX the physical address of the information block.
//! The trampoline checks for long mode, builds boot page tables that map the first 4 GiB
//! twice (identity, and at [`DIRECT_MAP_BASE`] so the direct map works before the real
//! tables exist), enables PAE, long mode, NX and write protection, and calls
//! `ferrovisor_main(magic, info)` on the boot stack. The hypervisor replaces these tables
//! with its own as soon as it has a frame allocator.
#![allow(unsafe_code)]

/// Base of the direct map of physical memory, in both the boot tables and the final ones.
/// PML4 slot 256: the first kernel-half slot.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// Size of the boot stack (the stack `ferrovisor_main` runs on). Generous: boot-time
/// structures such as `BootInfo` (about 20 KiB) live on it and are moved by value.
pub const BOOT_STACK_SIZE: u64 = 256 * 1024;

extern "C" {
    static __image_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
    static boot_stack_guard: u8;
    static boot_stack_top: u8;
}

/// Where the linker put each part of the image, as physical (= virtual) addresses.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of the image; the boot headers and boot code come first, then `.text`.
    pub image_start: u64,
    /// `[text_start, text_end)`: the executable part (boot code included from image_start).
    pub text_start: u64,
    pub text_end: u64,
    /// `[rodata_start, rodata_end)`: read-only data.
    pub rodata_start: u64,
    pub rodata_end: u64,
    /// `[data_start, image_end)`: data and BSS, writable and never executable.
    pub data_start: u64,
    pub image_end: u64,
    /// The unmapped page below the boot stack.
    pub boot_stack_guard: u64,
    /// One past the top of the boot stack.
    pub boot_stack_top: u64,
}

/// Reads the linker-provided section boundaries.
pub fn image_layout() -> ImageLayout {
    // Only the addresses of these linker symbols are taken; nothing is read through them.
    ImageLayout {
        image_start: core::ptr::addr_of!(__image_start) as u64,
        text_start: core::ptr::addr_of!(__text_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_start: core::ptr::addr_of!(__rodata_start) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        data_start: core::ptr::addr_of!(__data_start) as u64,
        image_end: core::ptr::addr_of!(__image_end) as u64,
        boot_stack_guard: core::ptr::addr_of!(boot_stack_guard) as u64,
        boot_stack_top: core::ptr::addr_of!(boot_stack_top) as u64,
    }
}

core::arch::global_asm!(
    r#"
    .set MB1_MAGIC, 0x1BADB002
    /* page-align modules | memory info | load addresses given in the header (a.out kludge) */
    .set MB1_FLAGS, 0x00010003
    .set MB2_MAGIC, 0xE85250D6

    .section .multiboot_header, "a"
    .balign 8
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long 0x100000000 - (MB1_MAGIC + MB1_FLAGS)
    .long mb1_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long ferrovisor_start32

    .balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0                               /* i386 protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (MB2_MAGIC + (mb2_header_end - mb2_header))
    /* module alignment tag: page-aligned modules. No framebuffer tag: text mode only. */
    .short 6
    .short 0
    .long 8
    .short 0                              /* end tag */
    .short 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global ferrovisor_start32
ferrovisor_start32:
    cli
    cld
    mov edi, eax                          /* loader magic */
    mov esi, ebx                          /* boot information address */

    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 90f
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 29                     /* long mode */
    jz 90f
    mov ebp, edx                          /* keep: bit 20 says NX exists */

    /* 2048 2-MiB pages covering 0..4 GiB */
    xor ecx, ecx
1:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83                          /* present | writable | large */
    mov dword ptr [boot_pd + ecx * 8], eax
    mov dword ptr [boot_pd + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 2048
    jb 1b
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt + ecx * 8], eax
    mov dword ptr [boot_pdpt + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 4
    jb 2b
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax        /* identity */
    mov dword ptr [boot_pml4 + 256 * 8], eax /* direct map */

    mov eax, cr4
    or eax, 1 << 5                        /* PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080                   /* EFER */
    rdmsr
    or eax, 1 << 8                        /* LME */
    test ebp, 1 << 20
    jz 3f
    or eax, 1 << 11                       /* NXE */
3:
    wrmsr
    mov eax, cr0
    or eax, 0x80010001                    /* PG | WP | PE */
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    mov eax, offset ferrovisor_start64
    push 0x08
    push eax
    retf

    /* No long mode: say so on COM1 and the 0xE9 debug port, then stop. */
90:
    mov esi, offset boot_no_lm_msg
91:
    lodsb
    test al, al
    jz 92f
    mov dx, 0x3f8
    out dx, al
    mov dx, 0xe9
    out dx, al
    jmp 91b
92:
    hlt
    jmp 92b

    .code64
ferrovisor_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov edi, edi                          /* zero-extend the 32-bit arguments */
    mov esi, esi
    lea rsp, [rip + boot_stack_top]
    xor ebp, ebp
    call ferrovisor_main
5:
    cli
    hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff              /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff              /* 0x10: data */
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt
boot_no_lm_msg:
    .asciz "ferrovisor: this CPU has no long mode (x86-64); cannot boot\r\n"

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:

    .text
    "#,
    stack_size = const BOOT_STACK_SIZE,
);
