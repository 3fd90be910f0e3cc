/* The benchmark's hot loop: xorshift64, 11 instructions per iteration, no memory access.
 * The same bytes run in the booted host (ring 3, under the kernel's page tables and timer)
 * and on a bare Unicorn, so the ratio measures the emulator's own overhead. */
    .text
    .globl bench_loop
bench_loop:                 /* rdi = iterations; returns the state in rax */
    movabs $0x9e3779b97f4a7c15, %rax
1:  mov %rax, %rdx
    shl $13, %rdx
    xor %rdx, %rax
    mov %rax, %rdx
    shr $7, %rdx
    xor %rdx, %rax
    mov %rax, %rdx
    shl $17, %rdx
    xor %rdx, %rax
    dec %rdi
    jnz 1b
    ret
    .globl bench_loop_end
bench_loop_end:
