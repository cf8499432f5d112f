# No descriptor other than 0 and 1 is open: read(fd, buf, 0) and write(fd, buf, 0) give -EBADF for fds 2..4095.
# expect: returned rax=0
# rax = the number of fds in 2..4095 where either call returned something other than -EBADF (-9).
.intel_syntax noprefix
.text
    mov r12, rdx                        # scratch as the (unused) buffer
    mov r13d, 2                         # fd
    xor r14d, r14d                      # open fds seen
.Lnext:
    xor eax, eax                        # read(fd, scratch, 0)
    mov edi, r13d
    mov rsi, r12
    xor edx, edx
    syscall
    cmp rax, -9
    jne .Lopen
    mov eax, 1                          # write(fd, scratch, 0)
    mov edi, r13d
    mov rsi, r12
    xor edx, edx
    syscall
    cmp rax, -9
    je .Lclosed
.Lopen:
    inc r14
.Lclosed:
    inc r13d
    cmp r13d, 4096
    jb .Lnext
    mov rax, r14
    ret
