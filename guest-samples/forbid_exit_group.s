# exit_group(0) (syscall 231) is not exit (60): strict mode kills the worker instead of letting it exit.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 231
    xor edi, edi
    syscall
    ret                                 # only reached if exit_group failed without a kill
