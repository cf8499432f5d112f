# cli needs IOPL 3: in user mode it raises #GP, reported as SIGSEGV with address 0.
# expect: crashed SIGSEGV code_offset=0x1 address=0x0 instruction="cli"
.intel_syntax noprefix
.text
    nop                                 # 0x0
    cli                                 # 0x1
    ret
