# With --stack 64KiB the guest can write every qword from rsp - 65280 up to rsp.
# expect: returned rax=1
# args: --stack 64KiB
# 65280 = 64 KiB - 256: close to the bottom (the guard page is 256 bytes further down,
# less what the runner keeps above the return address), without relying on exact layout.
.intel_syntax noprefix
.text
    lea rax, [rsp - 65280]
.Lfill:
    mov qword ptr [rax], rax
    add rax, 8
    cmp rax, rsp
    jb .Lfill                           # stops below [rsp], the return address
    lea rcx, [rsp - 65280]
    cmp qword ptr [rcx], rcx            # read the lowest one back
    jne .Lbad
    mov eax, 1
    ret
.Lbad:
    mov eax, 2
    ret
