# Halts with 42 in RAX but stores 7 at 0x400: the VMM's second check must catch it.
# mode: long
# expect-status: 1
# expect-stderr: memory at 0x400 is 7
    .code64
    movq $7, 0x400
    mov $42, %eax
    hlt
