/*
 * Boot loader stub: a flat binary at physical 0x7000, entered by the firmware in 64-bit mode
 * with its page tables, IF=0 and RSI = boot_params physical address (docs/boot-protocol.md).
 * Checks the boot_params magic and jumps to boot_params.kernel_entry with RDI = boot_params.
 */
#include "bootparam.h"

#define UART_THR 0x3f8
#define UART_LSR 0x3fd
#define LSR_THRE 0x20

    .code64
    .section .text.entry, "ax"
    .globl _start
_start:
    cli
    cld
    movabs  $BOOT_PARAMS_MAGIC, %rax
    cmpq    %rax, BP_MAGIC(%rsi)
    jne     bad_magic
    movq    %rsi, %rdi
    movq    BP_KERNEL_ENTRY(%rsi), %rax
    jmp     *%rax

bad_magic:
    leaq    msg(%rip), %rsi
1:  movb    (%rsi), %cl
    testb   %cl, %cl
    jz      3f
    movw    $UART_LSR, %dx
2:  inb     %dx, %al
    testb   $LSR_THRE, %al
    jz      2b
    movw    $UART_THR, %dx
    movb    %cl, %al
    outb    %al, %dx
    incq    %rsi
    jmp     1b
3:  cli
    hlt
    jmp     3b

    .section .rodata, "a"
msg:
    .asciz  "loader: bad boot_params magic\n"
