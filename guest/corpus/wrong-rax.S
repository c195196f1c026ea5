# Stores 42 at 0x400 but halts with 41 in RAX: the VMM's first check must catch it.
# mode: long
# expect-status: 1
# expect-stderr: RAX is 41
    .code64
    movq $42, 0x400
    mov $41, %eax
    hlt
