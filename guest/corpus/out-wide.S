# Prints the greeting with 4-byte and 2-byte OUTs: each must print all its bytes.
# mode: long
# expect-status: 0
# expect-stdout: Hello, world!\n
# expect-stderr: after 5 exits (io 4, hlt 1)
    .code64
    mov $0xe9, %dx
    mov $0x6c6c6548, %eax   # "Hell"
    out %eax, (%dx)
    mov $0x77202c6f, %eax   # "o, w"
    out %eax, (%dx)
    mov $0x646c726f, %eax   # "orld"
    out %eax, (%dx)
    mov $0x0a21, %ax        # "!\n"
    out %ax, (%dx)
    movq $42, 0x400
    mov $42, %eax
    hlt
