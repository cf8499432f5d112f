# The legacy [vsyscall] page is mapped in every process, but neither the guest nor the kernel on
# its behalf can read it: the kernel refuses the address, a load faults.
# expect: crashed SIGSEGV address=0xffffffffff600000 output_hex=f2ffffffffffffff
# 1. write(1, 0xffffffffff600000, 16): the address lies above the user address range, so the
#    kernel answers -EFAULT (-14) without touching it; the guest writes that rax to fd 1 (8
#    bytes, little-endian).
# 2. a load from the page: with vsyscall=xonly (the kernel's default; the page then shows as
#    `--xp` in /proc/self/maps) it is execute-only: SIGSEGV at the load, fault address = the
#    page. (With vsyscall=emulate the load would succeed and the guest would return;
#    tests/escape.rs reads the mode from its own maps.)
# Calls into the page are in tests/escape.rs's generated corpus: all three entries are killed.
.intel_syntax noprefix
.text
    mov r12, rdx                        # r12 = scratch
    mov rbx, 0xffffffffff600000         # the vsyscall page
    mov eax, 1                          # write(1, vsyscall page, 16)
    mov edi, 1
    mov rsi, rbx
    mov edx, 16
    syscall
    mov [r12], rax                      # -EFAULT
    mov eax, 1                          # write(1, &result, 8)
    mov edi, 1
    mov rsi, r12
    mov edx, 8
    syscall
    mov rax, [rbx]                      # the load
    ret
