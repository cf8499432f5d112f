# Three ways to modify its own code, none of which works; r12 picks one (default 0).
# expect: crashed SIGSEGV
# r12=0: a store into its own code (.Lpatch, the last byte): the code is mapped read+execute,
#        never writable: SIGSEGV at the store, fault address = .Lpatch.
# r12=1: copies `mov eax, 42; ret` into its scratch and calls it: scratch is read+write, never
#        executable: SIGSEGV with the instruction pointer at the scratch, outside the code
#        (fault address = the scratch's first byte, a page boundary).
# r12=2: asks the kernel to do the store: read(0, .Lpatch, 1) with one byte of input. The
#        kernel's copy into the read-only page fails: read returns -EFAULT (-14) in rax, and
#        rbx = the byte at .Lpatch afterwards, still 0xc3.
# Used by tests/escape.rs (which runs all three).
.intel_syntax noprefix
.text
    cmp r12, 1
    je .Lscratch
    cmp r12, 2
    je .Lkernel
    lea rax, [rip + .Lpatch]            # r12=0
    mov byte ptr [rax], 0x90            # faults: the code is never writable
    jmp .Lpatch
.Lscratch:
    mov dword ptr [rdx], 0x00002ab8     # b8 2a 00 00: mov eax, 42 ...
    mov word ptr [rdx + 4], 0xc300      # 00 c3: ... ; ret
    call rdx                            # faults: the scratch is never executable
    ret
.Lkernel:
    xor eax, eax                        # read(0, .Lpatch, 1)
    xor edi, edi
    lea rsi, [rip + .Lpatch]
    mov edx, 1
    syscall
    movzx ebx, byte ptr [rip + .Lpatch]
    ret
.Lpatch:
    ret
