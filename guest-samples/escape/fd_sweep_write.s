# Probes every descriptor 0-1023 with write(fd, "W", 1) and reports which ones worked: only fd 1
# (the output) is open for writing.
# expect: returned rax=1
# fd 1 is also the report channel, so the output is: one "W" for each sweep write that reached
# fd 1, then a 128-byte bitmap, bit fd set (byte fd / 8, bit fd % 8) for each fd whose write
# returned >= 0. Expected: "W", then 02 00 .. 00. rax = how many fds worked.
# Used by tests/escape.rs.
.intel_syntax noprefix
.text
    mov r12, rdx                        # r12 = the bitmap, in the zeroed scratch
    xor ebx, ebx                        # rbx = fd
    xor r13d, r13d                      # r13 = fds that worked
.Lnext:
    mov eax, 1                          # write(fd, "W", 1)
    mov edi, ebx
    lea rsi, [rip + .Lmark]
    mov edx, 1
    syscall
    test rax, rax
    js .Lskip
    bts qword ptr [r12], rbx            # bit fd of the bitmap
    inc r13
.Lskip:
    inc ebx
    cmp ebx, 1024
    jb .Lnext
    mov eax, 1                          # write(1, bitmap, 128)
    mov edi, 1
    mov rsi, r12
    mov edx, 128
    syscall
    mov rax, r13
    ret
.Lmark:
    .ascii "W"
