# Unbounded recursion with 64-byte frames that it touches: the first store below the stack is
# the call at offset 0x8, into the guard page: SIGSEGV, reported with the right instruction.
# expect: crashed SIGSEGV code_offset=0x8
# At entry rsp = top - 8 (the stack's top and bottom are page-aligned). Level k stores at
# top - 64 - 64k (mov, 8 bytes) and then top - 72 - 64k (the call's return address). Those
# stores are 0 and 56 (mod 64) relative to the bottom, so the mov stores exactly at the bottom
# at some level, and the call right after it stores at bottom - 8: the guard page. The fault
# address is therefore 0xff8 (mod 0x1000). Used by tests/escape.rs.
.intel_syntax noprefix
.text
.Lrecurse:
    sub rsp, 56                         # 0x0: 4 bytes
    mov [rsp], rsp                      # 0x4: 4 bytes; touches the frame's lowest word
    call .Lrecurse                      # 0x8: pushes 8 more: 64 bytes a level
