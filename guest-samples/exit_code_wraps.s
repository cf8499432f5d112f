# exit(259): the kernel keeps only the low 8 bits of the status, so the code is 3.
# expect: exited 3
.intel_syntax noprefix
.text
    mov eax, 60
    mov edi, 259
    syscall
    ud2                                 # never reached
