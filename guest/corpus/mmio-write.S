# Writes to guest physical 256 MiB, where there is no memory: an MMIO exit.
# mode: protected
# expect-status: 4
# expect-stderr: MMIO write of 4 byte(s) at 0x10000000
    .code32
    movl $1, 0x10000000
    hlt
