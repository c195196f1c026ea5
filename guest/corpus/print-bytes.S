# Lab 5's cost comparison, byte by byte: builds a 4000-byte line at 0x10000 and prints it with
# one OUT per byte on port 0xE9: 4000 exits.
# mode: long
# lab: hypercalls
# expect-status: 0
# expect-stderr: guest halted after 4001 exits (io 4000, hlt 1)
    .code64
    mov $0x10000, %rdi
    mov $3999, %ecx
    mov $'x', %al
    rep stosb
    movb $'\n', (%rdi)
    mov $0x10000, %rsi
    mov $4000, %ecx
    mov $0xe9, %dx
1:  lodsb
    out %al, (%dx)
    dec %ecx
    jnz 1b
    movq $42, 0x400
    mov $42, %eax
    hlt
