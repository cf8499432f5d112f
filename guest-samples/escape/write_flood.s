# Writes its whole scratch (1 MiB of zeros) to fd 1 again and again: the host kills it one byte
# past --max-output and keeps exactly --max-output bytes.
# expect: output_limit output_len=10000
# args: --max-output 10000
# Each write asks for far more than the limit and than a pipe holds, so the worker blocks in
# write until the host reads; the host reads one byte past the limit, kills, and reports
# output_limit (not timeout: it never waits for the deadline). Used by tests/escape.rs.
.intel_syntax noprefix
.text
    mov rbx, rdx                        # scratch address
    mov r12, rcx                        # scratch length
.Lagain:
    mov eax, 1                          # write(1, scratch, length)
    mov edi, 1
    mov rsi, rbx
    mov rdx, r12
    syscall
    jmp .Lagain
