# mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) (syscall 9): no new memory.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 9
    xor edi, edi
    mov esi, 4096
    mov edx, 3                          # PROT_READ | PROT_WRITE
    mov r10d, 0x22                      # MAP_PRIVATE | MAP_ANONYMOUS
    mov r8, -1
    xor r9d, r9d
    syscall
    ret                                 # only reached if mmap was allowed
