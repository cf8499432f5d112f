# Copies stdin to stdout in 4-byte reads until read(0) returns 0 (EOF), then returns 0.
# expect: returned rax=0 output="hello, bytejail\n"
# args: --input-hex 68656c6c6f2c20627974656a61696c0a
# The input is 16 bytes, so this takes four reads of 4 bytes and a fifth that sees EOF.
.intel_syntax noprefix
.text
    mov r12, rdx                        # scratch buffer (syscall clobbers rcx and r11)
.Lread:
    xor eax, eax                        # read(0, scratch, 4)
    xor edi, edi
    mov rsi, r12
    mov edx, 4
    syscall
    test rax, rax
    jz .Ldone                           # EOF: rax = 0
    js .Lfail                           # -errno
    mov r13, rax                        # bytes left to write
    mov r14, r12                        # from here
.Lwrite:
    mov eax, 1                          # write(1, r14, r13)
    mov edi, 1
    mov rsi, r14
    mov rdx, r13
    syscall
    test rax, rax
    jle .Lfail
    add r14, rax
    sub r13, rax
    jnz .Lwrite
    jmp .Lread
.Ldone:
    ret
.Lfail:
    ret                                 # returns the error in rax
