/*
 * The monitor's per-CPU entry, called by the host driver as `long entry(unsigned int cpu)`
 * with interrupts off (HyperEnclave's arch_entry). It enables VMX operation with VMXON on this
 * CPU's VMXON region; from that instruction on the CPU runs the monitor in VMX root
 * operation. When the launch succeeds the host is resumed as a guest at the driver's return
 * address with RAX = 0 (it never comes back here); when the monitor refuses, execution goes on
 * after VMXON with RAX = -errno.
 *
 * Register contract with the monitor at VMXON: RDI = cpu id, RSI = physical address of this
 * image (the start of monitor memory), [RSP] = the VMXON operand, [RSP+8] = return address.
 */
#include "hyperenclave.h"

    .text
    .code64
    .globl arch_entry
arch_entry:
    mov     HE_OFF_PERCPU_SIZE + header(%rip), %rax
    mov     %edi, %edi
    imul    %rdi, %rax                      /* this CPU's offset among the per-CPU areas */
    mov     HE_OFF_PERCPU_PHYS + header(%rip), %rdx
    sub     HE_OFF_HV_PHYS + header(%rip), %rdx
    lea     header(%rip), %rcx
    add     %rax, %rcx
    movl    $HE_VMCS_REVISION_ID, (%rcx,%rdx)   /* the VMXON region starts with the revision */
    add     HE_OFF_PERCPU_PHYS + header(%rip), %rax
    push    %rax                            /* VMXON operand: the region's physical address */
    mov     %cr4, %rax
    or      $0x2000, %rax                   /* CR4.VMXE */
    mov     %rax, %cr4
    mov     HE_OFF_HV_PHYS + header(%rip), %rsi
    vmxon   (%rsp)
    /* Only reached when the launch was refused (RAX = -errno, VMX left again) or VMXON
     * itself failed (VMfailInvalid: CF set, RAX untouched). */
    jnc     1f
    mov     $-5, %rax                       /* -EIO */
1:  mov     %cr4, %rdx
    and     $~0x2000, %rdx
    mov     %rdx, %cr4
    add     $8, %rsp
    ret

    .section .header, "a"
    .globl header
header:
    .skip   HE_HEADER_SIZE                  /* written by hyperenclave/vmm/image.py */
