# One byte more than --max-output is over the limit: output_limit, with the first 4096 bytes kept.
# expect: output_limit output_len=4096
# args: --max-output 4KiB
# The twin of exact_max_output.s.
.intel_syntax noprefix
.text
    mov rsi, rdx                        # write(1, scratch, 4097)
    mov eax, 1
    mov edi, 1
    mov edx, 4097
    syscall
    ret
