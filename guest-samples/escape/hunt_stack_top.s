# Hunts for the host's environment with no hint at all: probes the top 16 GiB of the address
# space page by page with write(1, page, 1) (EFAULT for unmapped pages, no crash), and at the
# first mapped page from the top (the top of the host's stack, where the kernel put the
# environment strings) dumps 16 pages downwards to fd 1.
# Scrubbed (the default) nothing is mapped there and the output is empty; with --no-scrub the
# environment of the bytejail process comes out. Used by tests/hardening.rs.
.intel_syntax noprefix
.text
    mov rbx, 0x7ffffffff000             # highest user page
    mov r12, 0x7ffc00000000             # give up below the top 16 GiB
.Lprobe:
    cmp rbx, r12
    jb .Ldone
    mov eax, 1                          # write(1, rbx, 1)
    mov edi, 1
    mov rsi, rbx
    mov edx, 1
    syscall
    cmp rax, 1
    je .Lfound
    sub rbx, 0x1000
    jmp .Lprobe
.Lfound:
    mov r13, 16                         # dump rbx, rbx - 4K, ... (stops at the first hole)
.Ldump:
    mov eax, 1
    mov edi, 1
    mov rsi, rbx
    mov edx, 0x1000
    syscall
    cmp rax, 0x1000
    jne .Ldone
    sub rbx, 0x1000
    dec r13
    jnz .Ldump
.Ldone:
    xor eax, eax
    ret
