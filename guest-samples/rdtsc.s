# Strict mode sets CR4.TSD for the task: rdtsc raises #GP, i.e. SIGSEGV with address 0.
# expect: crashed SIGSEGV code_offset=0x0 address=0x0 instruction="rdtsc"
.intel_syntax noprefix
.text
    rdtsc
    ret
