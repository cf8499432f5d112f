# Probes rbx .. rbx + r12 (page-aligned) page by page and writes every readable page to fd 1:
# write(1, page, 4096) copies a mapped page out and fails with EFAULT, harmlessly, on an unmapped
# one. A hunt for a secret the host holds in its heap, given roughly where to look.
# Scrubbed (the default) the host's heap is gone; with --no-scrub it comes out.
# Used by tests/hardening.rs.
.intel_syntax noprefix
.text
.Lnext:
    test r12, r12
    jz .Ldone
    mov eax, 1                          # write(1, rbx, 4096)
    mov edi, 1
    mov rsi, rbx
    mov edx, 0x1000
    syscall
    add rbx, 0x1000
    sub r12, 0x1000
    jmp .Lnext
.Ldone:
    xor eax, eax
    ret
