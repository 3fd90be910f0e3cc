/* _start: rsp -> argc, argv[], NULL, envp[], NULL, auxv (SysV x86-64). */
    .section .text._start, "ax"
    .globl _start
_start:
    xorl    %ebp, %ebp
    movq    (%rsp), %rdi            /* argc */
    leaq    8(%rsp), %rsi           /* argv */
    leaq    8(%rsi,%rdi,8), %rdx    /* envp */
    andq    $-16, %rsp
    call    main
    movl    %eax, %edi
    call    exit
1:  hlt
    jmp     1b
