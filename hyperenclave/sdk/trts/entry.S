/*
 * The enclave's entry point (TCS.OENTRY) and its exits, after the SGX SDK's trts/linux/trts_pic.S.
 * EENTER arrives with RAX = CSSA, RBX = TCS, RCX = the app's return address, RDI/RSI as in
 * he_edge.h, and the app's RSP/RBP. The thread's data page is at GS base; its first word is its
 * own offset from the enclave base, so the runtime never needs an absolute address the signer
 * would have had to know.
 */
#define TD_SELF         0
#define TD_STACK_TOP    8
#define TD_URSP         40
#define TD_URBP         48
#define TD_URET         56
#define TD_OCALL_RSP    64

    .section .text.he_entry, "ax"
    .globl enclave_entry
    .type enclave_entry, @function
enclave_entry:
    cld                                 /* RFLAGS.DF comes from the app */
    lea __ImageBase(%rip), %r10
    mov %gs:TD_SELF, %r11
    add %r10, %r11                      /* R11 = this thread's data */
    mov %rsp, TD_URSP(%r11)
    mov %rbp, TD_URBP(%r11)
    mov %rcx, TD_URET(%r11)
    mov TD_OCALL_RSP(%r11), %rsp
    test %rsp, %rsp
    jz 1f
    sub $256, %rsp                      /* an OCALL is pending: run below its suspended frames */
    jmp 2f
1:  mov TD_STACK_TOP(%r11), %rsp
    add %r10, %rsp
2:  and $-16, %rsp
    xor %ebp, %ebp
    mov %rsi, %rcx                      /* he_trts_entry(td, cssa, index, ms) */
    mov %rdi, %rdx
    mov %rax, %rsi
    mov %r11, %rdi
    call he_trts_entry                  /* RAX = status, RDX = EXITINFO (crash) */
    mov %rax, %rsi
    mov $-1, %rdi                       /* HE_OCALL_ERET */
    /* fall through */

/* EEXIT to the app with RDI/RSI(/RDX) as given; everything else scrubbed. */
he_eexit:
    lea __ImageBase(%rip), %r10
    mov %gs:TD_SELF, %r11
    add %r10, %r11
    mov TD_URET(%r11), %rbx
    mov TD_URSP(%r11), %rsp
    mov TD_URBP(%r11), %rbp
    xor %ecx, %ecx
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    mov $4, %eax                        /* EEXIT */
    enclu
    ud2
    .size enclave_entry, . - enclave_entry

/* long he_ocall_switch(struct he_thread_data *td, long index, uintptr_t ms): suspend this ECALL
 * (callee-saved registers on its stack, the stack in td->ocall_rsp) and EEXIT with RDI = index,
 * RSI = ms. Returns, with the app's return value, when he_oret_switch() resumes it. */
    .text
    .globl he_ocall_switch
    .type he_ocall_switch, @function
he_ocall_switch:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, TD_OCALL_RSP(%rdi)
    mov %rsi, %rdi
    mov %rdx, %rsi
    xor %edx, %edx
    jmp he_eexit
    .size he_ocall_switch, . - he_ocall_switch

/* void he_oret_switch(struct he_thread_data *td, long ret): resume the suspended ECALL. */
    .globl he_oret_switch
    .type he_oret_switch, @function
he_oret_switch:
    mov TD_OCALL_RSP(%rdi), %rsp
    movq $0, TD_OCALL_RSP(%rdi)
    mov %rsi, %rax
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
    .size he_oret_switch, . - he_oret_switch

    .section .note.GNU-stack, "", @progbits
