# A guest that spins forever is killed by the host at the wall-clock deadline.
# expect: timeout
# args: --timeout 300ms
.intel_syntax noprefix
.text
.Lspin:
    jmp .Lspin
