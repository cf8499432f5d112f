# hlt is privileged: at CPL 3 it raises #GP, which the kernel reports as SIGSEGV with address 0.
# expect: crashed SIGSEGV code_offset=0x0 address=0x0 instruction="hlt"
.intel_syntax noprefix
.text
    hlt
    ret
