//! PVH entry: the Xen ELF note, the 32-bit entry point and the switch to long mode.
//!
//! Entry state (PVH ABI, `docs/misc/pvh.pandoc`): 32-bit protected mode, paging off, flat
//! 4 GiB CS/DS/ES/SS, interrupts off, EBX = guest-physical address of `hvm_start_info`.
//! GDTR/IDTR are unspecified, so the code uses no stack and takes no exception until it has
//! its own GDT and (in Rust) IDT.
//!
//! Steps: zero `.bss`; load the runtime's GDT and flat data segments; build page tables that
//! identity-map the first 4 GiB with 2 MiB pages (PML4 -> PDPT -> 4 page directories, all in
//! `.bss`); set CR4.PAE, CR3, EFER.LME, then CR0.PG; far-jump to the 64-bit code segment;
//! load a 64 KiB stack from `.bss` and call `guest_rt_start(start_info_gpa)`, which the
//! guest's [`entry!`](crate::entry) macro defines. EBX is preserved throughout.
//!
//! Only built for the bare-metal target.

use core::arch::global_asm;

// The note: `XEN_ELFNOTE_PHYS32_ENTRY` (18), owner "Xen", 4-byte descriptor = the physical
// address of `pvh_start32`. In its own section, which the linker script places in a PT_NOTE
// program header (and in the read-only PT_LOAD segment).
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4
    .popsection
    "#
);

// 32-bit entry and the switch to long mode.
global_asm!(
    r#"
    .pushsection .text.guest_rt.pvh_entry, "ax", @progbits
    .code32
    .global pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld

    /* Zero .bss (page tables, stack, IDT). ES is flat per the PVH ABI. */
    mov edi, offset __guest_bss_start
    mov ecx, offset __guest_bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd

    /* Own GDT and flat data segments. */
    lgdt [guest_rt_gdt_ptr]
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax

    /* PML4[0] -> PDPT. */
    mov eax, offset guest_rt_pdpt
    or eax, 0x3
    mov dword ptr [guest_rt_pml4], eax

    /* PDPT[0..4] -> the four page directories. */
    mov edi, offset guest_rt_pdpt
    mov eax, offset guest_rt_pd
    or eax, 0x3
    mov ecx, 4
2:
    mov dword ptr [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz 2b

    /* 2048 PDEs: 2 MiB pages, present + writable + PS, identity from GPA 0 to 4 GiB. */
    mov edi, offset guest_rt_pd
    mov eax, 0x83
    mov ecx, 2048
3:
    mov dword ptr [edi], eax
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz 3b

    /* CR4.PAE, CR3, EFER.LME, CR0.PG (+PE). */
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset guest_rt_pml4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax

    /* ljmp 0x08:guest_rt_start64 (ptr16:32 encoding). */
    .byte 0xea
    .long guest_rt_start64
    .word 0x08

    .code64
guest_rt_start64:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    xor eax, eax
    mov fs, eax
    mov gs, eax
    lea rsp, [rip + guest_rt_stack_top]
    xor ebp, ebp
    mov edi, ebx            /* start_info GPA, zero-extended */
    call guest_rt_start
4:
    cli
    hlt
    jmp 4b
    .size pvh_start32, . - pvh_start32
    .popsection

    /* GDT: null, 0x08 = 64-bit ring-0 code, 0x10 = flat data (accessed bits preset, and in
       .data because the CPU may set them). */
    .pushsection .data.guest_rt.gdt, "aw", @progbits
    .balign 16
guest_rt_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
guest_rt_gdt_end:
    .balign 8
    .global guest_rt_gdt_ptr
guest_rt_gdt_ptr:
    .word guest_rt_gdt_end - guest_rt_gdt - 1
    .quad guest_rt_gdt
    .popsection

    .pushsection .bss.guest_rt.boot, "aw", @nobits
    .balign 4096
guest_rt_pml4:
    .skip 4096
guest_rt_pdpt:
    .skip 4096
guest_rt_pd:
    .skip 4 * 4096
    .global guest_rt_stack_bottom
guest_rt_stack_bottom:
    .skip 65536
    .global guest_rt_stack_top
guest_rt_stack_top:
    .popsection
    "#
);
