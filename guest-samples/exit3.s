# exit(3) through syscall 60.
# expect: exited 3
.intel_syntax noprefix
.text
    mov eax, 60
    mov edi, 3
    syscall
    ud2                                 # never reached
