# Clears PML4[0] and reloads CR3: the next instruction fetch cannot be translated.
# mode: long
# expect-status: 4
# expect-stderr: triple fault
    .code64
    movq $0, 0x2000
    mov %cr3, %rax
    mov %rax, %cr3
    hlt
