# Prints the greeting with one string instruction. VMX hosts report it as one exit with a
# count of 14, PVM hosts as 14 exits of one byte: either way all 14 bytes must be printed.
# mode: long
# expect-status: 0
# expect-stdout: Hello, world!\n
    .code64
    lea msg(%rip), %rsi
    mov $14, %ecx
    mov $0xe9, %dx
    rep outsb
    movq $42, 0x400
    mov $42, %eax
    hlt
msg: .ascii "Hello, world!\n"
