"""A hand-written enclave that uses EREPORT and EGETKEY the way the SGX SDK does (tests only).

Code at offset 0 of its page, its data page right after it (EnclaveLayout.simple(code,
bytes(4096))); RDI selects what it does, RDX is what it EEXITs with:

  1  self report: EREPORT with a zero TARGETINFO, make TARGETINFO from that REPORT
     (sgx_self_target), EREPORT again with REPORTDATA = 0x5a * 64, EGETKEY(REPORT, the REPORT's
     KEYID), AES-CMAC the REPORT.BODY with that key (AES-NI): RDX bit 0 = the MAC matches,
     bit 1 = a body with one REPORTDATA bit flipped does not match (or 0x1000 | EGETKEY's RAX);
     bits 2 and 3: HyperEnclave's VerifyReport hypercall agrees on both
  2  SEAL key, policy MRSIGNER   \\  RDX = low 8 bytes of AES(key, 0^16): a fingerprint of the
  3  SEAL key, policy MRENCLAVE  /   key, the way sealed data would show it (or EGETKEY's RAX)
  4  SEAL key for ISVSVN 1 (newer than the enclave's 0): RDX = EGETKEY's RAX
  an address (a buffer shared with the app, enclave_load --quote): REPORT for HyperEnclave's
     pseudo-QE (vmm/quote.py QUOTING_TARGET) with REPORTDATA = buffer[0:64], written to
     buffer[64:496]; RDX = 0

The key schedule and key are scrubbed before EEXIT; the app's RSP is kept in the data page.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SELF_REPORT, SEAL_MRSIGNER, SEAL_MRENCLAVE, SEAL_NEWER_SVN = 1, 2, 3, 4
REPORT_DATA = b"\x5a" * 64

# data page: TARGETINFO 0x000, KEYREQUEST 0x200, REPORT 0x400, REPORTDATA 0x600, key 0x640,
# CMAC subkey 0x680, round keys 0x700-0x7af, app RSP 0xff8, stack below it
SOURCE = r"""
_start:
    lea _start(%rip), %r14
    add $0x1000, %r14               # the data page
    mov %rsp, 0xff8(%r14)
    lea 0xff0(%r14), %rsp
    mov %rcx, %r13                  # EEXIT target
    cmp $0x1000, %rdi ; jae quote_report
    cmp $1, %rdi ; je self_report
    mov $2, %r10d ; xor %r11d, %r11d
    cmp $2, %rdi ; je seal
    mov $1, %r10d
    cmp $3, %rdi ; je seal
    mov $1, %r11d
    cmp $4, %rdi ; je seal
    mov $-1, %rdx
    jmp done

zero_keyrequest:
    lea 0x200(%r14), %rdi ; xor %eax, %eax ; mov $64, %ecx ; rep stosq
    ret

self_report:
    lea (%r14), %rdi ; xor %eax, %eax ; mov $64, %ecx ; rep stosq
    lea 0x600(%r14), %rdi ; mov $0x5a, %al ; mov $64, %ecx ; rep stosb
    lea (%r14), %rbx ; lea 0x600(%r14), %rcx ; lea 0x400(%r14), %rdx ; xor %eax, %eax
    enclu                                              # EREPORT for a null target
    movdqu 0x440(%r14), %xmm0 ; movdqu %xmm0, 0x00(%r14)   # MEASUREMENT
    movdqu 0x450(%r14), %xmm0 ; movdqu %xmm0, 0x10(%r14)
    movdqu 0x430(%r14), %xmm0 ; movdqu %xmm0, 0x20(%r14)   # ATTRIBUTES
    lea (%r14), %rbx ; lea 0x600(%r14), %rcx ; lea 0x400(%r14), %rdx ; xor %eax, %eax
    enclu                                              # EREPORT for ourselves
    call zero_keyrequest
    movw $3, 0x200(%r14)                               # KEYNAME = REPORT
    movdqu 0x580(%r14), %xmm0 ; movdqu %xmm0, 0x228(%r14)  # KEYID = REPORT.KEYID
    movdqu 0x590(%r14), %xmm0 ; movdqu %xmm0, 0x238(%r14)
    lea 0x200(%r14), %rbx ; lea 0x640(%r14), %rcx ; mov $1, %eax
    enclu                                              # EGETKEY
    mov %rax, %rdx ; or $0x1000, %rdx
    test %rax, %rax ; jnz done
    call cmac_report
    xor %edx, %edx
    movdqu 0x5a0(%r14), %xmm1 ; pcmpeqb %xmm0, %xmm1 ; pmovmskb %xmm1, %eax
    cmp $0xffff, %eax ; jne 1f ; or $1, %edx
1:  lea 0x400(%r14), %rbx ; mov $0x8000000a, %eax ; vmcall   # VerifyReport
    test %rax, %rax ; jnz 2f ; or $4, %edx
2:  xorb $1, 0x540(%r14)                               # flip a bit of REPORTDATA
    push %rdx ; call cmac_report ; pop %rdx
    movdqu 0x5a0(%r14), %xmm1 ; pcmpeqb %xmm0, %xmm1 ; pmovmskb %xmm1, %eax
    cmp $0xffff, %eax ; je 3f ; or $2, %edx
3:  lea 0x400(%r14), %rbx ; mov $0x8000000a, %eax ; vmcall
    cmp $9, %rax ; jne done ; or $8, %edx                # SGX_MAC_COMPARE_FAIL
    jmp done

quote_report:                                          # RDI = the shared buffer
    mov %rdi, %r12
    lea (%r14), %rdi ; xor %eax, %eax ; mov $64, %ecx ; rep stosq
    movabs $0xeeeeeeeeeeeeeeee, %rax
    mov %rax, 0x00(%r14) ; mov %rax, 0x08(%r14) ; mov %rax, 0x10(%r14) ; mov %rax, 0x18(%r14)
    movq $1, 0x20(%r14) ; movq $3, 0x28(%r14)             # ATTRIBUTES INIT, XFRM x87|SSE
    mov %r12, %rsi ; lea 0x600(%r14), %rdi ; mov $64, %ecx ; rep movsb
    lea (%r14), %rbx ; lea 0x600(%r14), %rcx ; lea 0x400(%r14), %rdx ; xor %eax, %eax
    enclu                                              # EREPORT for the pseudo-QE
    lea 0x400(%r14), %rsi ; lea 64(%r12), %rdi ; mov $432, %ecx ; rep movsb
    xor %edx, %edx
    jmp done

seal:                                                  # R10 = KEYPOLICY, R11 = ISVSVN
    call zero_keyrequest
    movw $4, 0x200(%r14) ; mov %r10w, 0x202(%r14) ; mov %r11w, 0x204(%r14)
    lea 0x200(%r14), %rbx ; lea 0x640(%r14), %rcx ; mov $1, %eax
    enclu                                              # EGETKEY
    mov %rax, %rdx
    test %rax, %rax ; jnz done
    call expand_key
    pxor %xmm0, %xmm0 ; call encrypt ; movq %xmm0, %rdx
    jmp done

expand_key:                        # AES-128 round keys of the key at 0x640 -> 0x700
    movdqu 0x640(%r14), %xmm1 ; movdqu %xmm1, 0x700(%r14)
    lea 0x710(%r14), %rdi
    .irp rc, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36
    aeskeygenassist $\rc, %xmm1, %xmm2
    call expand_step
    .endr
    ret
expand_step:
    pshufd $0xff, %xmm2, %xmm2
    movdqa %xmm1, %xmm3
    pslldq $4, %xmm3 ; pxor %xmm3, %xmm1
    pslldq $4, %xmm3 ; pxor %xmm3, %xmm1
    pslldq $4, %xmm3 ; pxor %xmm3, %xmm1
    pxor %xmm2, %xmm1
    movdqu %xmm1, (%rdi) ; add $16, %rdi
    ret

encrypt:                           # xmm0 = AES(xmm0)
    movdqu 0x700(%r14), %xmm4 ; pxor %xmm4, %xmm0
    lea 0x710(%r14), %rsi ; mov $9, %ecx
1:  movdqu (%rsi), %xmm4 ; aesenc %xmm4, %xmm0 ; add $16, %rsi ; loop 1b
    movdqu (%rsi), %xmm4 ; aesenclast %xmm4, %xmm0
    ret

cmac_report:                       # xmm0 = AES-CMAC(key at 0x640, REPORT.BODY: 24 blocks)
    call expand_key
    pxor %xmm0, %xmm0 ; call encrypt                   # L = AES(0)
    movdqu %xmm0, 0x680(%r14)
    mov 0x680(%r14), %rax ; bswap %rax                 # K1 = L << 1 (^ 0x87 on carry)
    mov 0x688(%r14), %rdx ; bswap %rdx
    mov %rax, %rcx ; shr $63, %rcx
    shld $1, %rdx, %rax ; shl $1, %rdx
    neg %rcx ; and $0x87, %ecx ; xor %rcx, %rdx
    bswap %rax ; bswap %rdx
    mov %rax, 0x680(%r14) ; mov %rdx, 0x688(%r14)
    pxor %xmm0, %xmm0
    lea 0x400(%r14), %r8 ; mov $23, %r9d
2:  movdqu (%r8), %xmm5 ; pxor %xmm5, %xmm0 ; call encrypt
    add $16, %r8 ; dec %r9d ; jnz 2b
    movdqu (%r8), %xmm5 ; pxor %xmm5, %xmm0
    movdqu 0x680(%r14), %xmm5 ; pxor %xmm5, %xmm0
    call encrypt
    ret

done:                              # scrub the key material, EEXIT with RDX
    lea 0x640(%r14), %rdi ; xor %eax, %eax ; mov $56, %ecx ; rep stosq
    pxor %xmm0, %xmm0 ; pxor %xmm1, %xmm1 ; pxor %xmm2, %xmm2
    pxor %xmm3, %xmm3 ; pxor %xmm4, %xmm4 ; pxor %xmm5, %xmm5
    mov 0xff8(%r14), %rsp
    mov %r13, %rbx
    mov $4, %eax
    enclu
"""


def fingerprint(key: bytes) -> int:
    """What the enclave returns for a SEAL key: the low 8 bytes of AES(key, 0^16)."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return int.from_bytes(enc.update(bytes(16)) + enc.finalize(), "little") & (1 << 64) - 1
