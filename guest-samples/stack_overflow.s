# Unbounded recursion runs into the guard page below the stack: SIGSEGV.
# expect: crashed SIGSEGV code_offset=0x1
# Each level pushes 16 bytes: push rbx stores at an address = 0 (mod 16), call at one = 8 (mod 16),
# because (rsp + 8) % 16 == 0 at entry. The stack's bottom is page-aligned, so the first store
# below it (bottom - 8) is the call's.
.intel_syntax noprefix
.text
.Lrecurse:
    push rbx                            # 0x0
    call .Lrecurse                      # 0x1
