# Recurses without end from a stack near 0: RSP wraps below 0 into unmapped memory.
# mode: long
# expect-status: 4
# expect-stderr: triple fault
    .code64
    mov $0x10, %rsp
    jmp recurse
    .org 0x20
recurse:
    call recurse
