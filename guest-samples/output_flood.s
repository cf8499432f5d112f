# A guest that writes 1 KiB chunks forever passes --max-output 4KiB: killed, exactly 4096 bytes kept.
# expect: output_limit output_len=4096
# args: --max-output 4KiB --timeout 2s
.intel_syntax noprefix
.text
    mov r12, rdx                        # scratch: 1 KiB of zeros to write
.Lagain:
    mov eax, 1                          # write(1, scratch, 1024)
    mov edi, 1
    mov rsi, r12
    mov edx, 1024
    syscall
    jmp .Lagain
