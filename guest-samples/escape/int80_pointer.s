# int 0x80 truncates pointer arguments to 32 bits: an ia32 write of a message at its real,
# 64-bit address fails with -EFAULT, while the same write through `syscall` works.
# expect: returned rax=-14 output="ok\n"
# The guest passes the whole 64-bit address in rcx; the ia32 entry reads only ecx. Nothing is
# mapped below 4 GiB in a scrubbed worker (its arena lies in the mmap area, far above), so the
# truncated pointer is unmapped and the kernel answers -EFAULT without writing. r12 = the
# address used (tests/escape.rs checks it is above 4 GiB, else the truncation changes nothing).
# Used by tests/escape.rs.
.intel_syntax noprefix
.text
    lea r12, [rip + .Lmsg]              # r12 = the message's 64-bit address
    mov eax, 4                          # ia32 write(ebx = 1, ecx = .Lmsg, edx = 3)
    mov ebx, 1
    mov rcx, r12                        # all 64 bits; the kernel keeps ecx
    mov edx, 3
    int 0x80
    mov r13, rax                        # -EFAULT
    mov eax, 1                          # write(1, .Lmsg, 3): the same pointer, natively
    mov edi, 1
    mov rsi, r12
    mov edx, 3
    syscall
    mov rax, r13
    ret
.Lmsg:
    .ascii "ok\n"
