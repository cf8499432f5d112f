# Writing exactly --max-output bytes is within the limit: the guest returns normally.
# expect: returned rax=4096 output_len=4096
# args: --max-output 4KiB
.intel_syntax noprefix
.text
    mov rsi, rdx                        # write(1, scratch, 4096)
    mov eax, 1
    mov edi, 1
    mov edx, 4096
    syscall                             # rax = 4096 bytes written
    ret
