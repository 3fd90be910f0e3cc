/*
 * Kernel entry. The boot loader stub jumps here (the ELF e_entry, a high-half address that
 * the firmware's page tables map) with RDI = boot_params physical address, IF=0.
 */
    .code64
    .section .head.text, "ax"
    .globl startup_64
startup_64:
    cli
    cld
    movq    %rdi, %r12                  /* boot_params (physical) */
    /* zero .bss (the firmware zeroes p_memsz - p_filesz too, but do not rely on it) */
    movq    $__bss_start, %rdi
    movq    $__bss_stop, %rcx
    subq    %rdi, %rcx
    shrq    $3, %rcx
    xorl    %eax, %eax
    rep stosq
    movq    $boot_stack_top, %rsp
    xorl    %ebp, %ebp
    pushq   $0                          /* fake return address: ends backtraces */
    movq    %r12, %rdi
    call    start_kernel
1:  cli
    hlt
    jmp     1b

    .section .bss..page_aligned, "aw", @nobits
    .p2align 12
    .globl boot_stack, boot_stack_top
boot_stack:
    .skip   16384
boot_stack_top:
