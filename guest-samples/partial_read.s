# Reads only 3 of the 8 input bytes from fd 0, echoes them, and returns: the unread rest is no problem.
# expect: returned rax=3 output="abc"
# args: --input-hex 6162636465666768
.intel_syntax noprefix
.text
    mov r12, rdx                        # scratch buffer
    xor eax, eax                        # read(0, scratch, 3)
    xor edi, edi
    mov rsi, r12
    mov edx, 3
    syscall
    mov r13, rax                        # 3 (a pipe read returns what is there, up to 3)
    mov rdx, rax                        # write(1, scratch, n)
    mov eax, 1
    mov edi, 1
    mov rsi, r12
    syscall
    mov rax, r13
    ret
