# The report holds rflags as the guest left them: popfq sets OF SF ZF AF PF CF; IF and bit 1 are always set.
# expect: returned rax=0 rflags=0xad7
# 0x8d5 | 0x2 | 0x200 = 0xad7.
.intel_syntax noprefix
.text
    push 0x8d5
    popfq
    ret
