# Reads guest physical 512 MiB, where there is no memory: an MMIO exit.
# mode: protected
# expect-status: 4
# expect-stderr: MMIO read of 4 byte(s) at 0x20000000
    .code32
    mov 0x20000000, %eax
    hlt
