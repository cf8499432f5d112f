# The smallest guest: put 42 in rax and return to the runner.
# expect: returned rax=42
.intel_syntax noprefix
.text
    mov al, 42              # rax is 0 at entry, so rax = 42
    ret
