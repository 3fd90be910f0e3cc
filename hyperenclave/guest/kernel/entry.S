/*
 * Interrupt/exception stubs, the SYSCALL entry and the context switch.
 * The frame built here is struct pt_regs (include/sched.h).
 */
#define __USER_DS 0x2b
#define __USER_CS 0x33

    .code64
    .text

.macro PUSH_REGS
    pushq   %rdi
    pushq   %rsi
    pushq   %rdx
    pushq   %rcx
    pushq   %rax
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    pushq   %rbx
    pushq   %rbp
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
.endm

.macro POP_REGS
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbp
    popq    %rbx
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rax
    popq    %rcx
    popq    %rdx
    popq    %rsi
    popq    %rdi
.endm

/* 256 stubs of 16 bytes each: isr_stubs + 16 * vector. The CPU pushes an error code for
 * vectors 8, 10-14, 17, 21, 29, 30; the others push a 0 so the frame is uniform. */
.macro ISR vec
    .p2align 4
    .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq   $0
    .endif
    pushq   $\vec
    jmp     isr_common
.endm

    .p2align 4
    .globl isr_stubs
isr_stubs:
    .altmacro
    .set vec, 0
    .rept 256
    ISR %vec
    .set vec, vec + 1
    .endr
    .noaltmacro

isr_common:
    cld
    PUSH_REGS
    movq    %rsp, %rdi
    call    do_interrupt
    .globl ret_to_user
ret_to_user:                    /* also the first return of a new process */
    POP_REGS
    addq    $16, %rsp           /* vector, error code */
    iretq

/* SYSCALL: RCX = user RIP, R11 = user RFLAGS, IF already cleared by FMASK. */
    .p2align 4
    .globl syscall_entry
syscall_entry:
    movq    %rsp, syscall_user_rsp(%rip)
    movq    cpu_kstack_top(%rip), %rsp
    pushq   $__USER_DS                  /* ss */
    pushq   syscall_user_rsp(%rip)      /* rsp */
    pushq   %r11                        /* rflags */
    pushq   $__USER_CS                  /* cs */
    pushq   %rcx                        /* rip */
    pushq   $0                          /* error code */
    pushq   %rax                        /* vector slot = syscall number */
    cld
    PUSH_REGS
    movq    %rsp, %rdi
    call    do_syscall
    POP_REGS
    addq    $16, %rsp
    /* rip, cs, rflags, rsp, ss */
    movq    0(%rsp), %rcx
    movq    16(%rsp), %r11
    movq    24(%rsp), %rsp
    sysretq

/* void switch_to(u64 *prev_ksp, u64 next_ksp) */
    .globl switch_to
switch_to:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret

    .bss
    .p2align 3
    .globl syscall_user_rsp
syscall_user_rsp:
    .quad 0
