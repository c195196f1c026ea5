# Lab 5's cost comparison, in one exit: builds the same 4000-byte line at 0x10000 and prints it
# with one print_str hypercall (port 0xEC, the line's address in EAX).
# mode: long
# lab: hypercalls
# expect-status: 0
# expect-stderr: guest halted after 2 exits (io 1, hlt 1)
    .code64
    mov $0x10000, %rdi
    mov $3999, %ecx
    mov $'x', %al
    rep stosb
    movb $'\n', (%rdi)
    movb $0, 1(%rdi)
    mov $0x10000, %eax
    mov $0xec, %dx
    out %eax, (%dx)
    movq $42, 0x400
    mov $42, %eax
    hlt
