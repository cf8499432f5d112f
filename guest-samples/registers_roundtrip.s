# Every settable register set with --reg comes back unchanged from a guest that only returns.
# expect: returned rax=0x123456789abcdef0 rbx=1 rcx=2 rdx=3 rsi=4 rdi=5 rbp=6 r8=8 r9=9 r10=10 r11=11 r12=12 r13=13 r14=14 r15=0xffffffffffffffff
# args: --reg rax=0x123456789abcdef0 --reg rbx=1 --reg rcx=2 --reg rdx=3 --reg rsi=4 --reg rdi=5 --reg rbp=6 --reg r8=8 --reg r9=9 --reg r10=10 --reg r11=11 --reg r12=12 --reg r13=13 --reg r14=14 --reg r15=0xffffffffffffffff
# rdi, rsi, rdx and rcx override the ABI's input and scratch values too.
.intel_syntax noprefix
.text
    ret
