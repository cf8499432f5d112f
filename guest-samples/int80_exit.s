# The ia32 exit (int 0x80, nr 1) is allowed: exit(3) gives outcome exited 3.
# expect: exited 3
.intel_syntax noprefix
.text
    mov eax, 1
    mov ebx, 3
    int 0x80
    ud2                                 # never reached
