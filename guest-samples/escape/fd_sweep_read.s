# Probes every descriptor 0-1023 with read(fd, buf, 0) and reports which ones worked: only fd 0
# (the input) is open for reading.
# expect: returned rax=1
# A zero-length read still checks that fd is open and readable (EBADF otherwise) but never
# blocks and never consumes input. Output: a 128-byte bitmap, bit fd set (byte fd / 8, bit
# fd % 8) for each fd whose read returned >= 0; expected 01 00 .. 00. rax = how many worked.
# Used by tests/escape.rs.
.intel_syntax noprefix
.text
    mov r12, rdx                        # r12 = the bitmap, in the zeroed scratch
    xor ebx, ebx                        # rbx = fd
    xor r13d, r13d                      # r13 = fds that worked
.Lnext:
    xor eax, eax                        # read(fd, scratch + 128, 0)
    mov edi, ebx
    lea rsi, [r12 + 128]
    xor edx, edx
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
