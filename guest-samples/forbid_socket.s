# socket(AF_INET, SOCK_STREAM, 0) (syscall 41): no network for the guest.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 41
    mov edi, 2                          # AF_INET
    mov esi, 1                          # SOCK_STREAM
    xor edx, edx
    syscall
    ret                                 # only reached if socket was allowed
