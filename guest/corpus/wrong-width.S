# A real-mode guest that stores the word 0x012a at 0x400: reading one byte would wrongly see 42.
# mode: real
# expect-status: 1
# expect-stderr: memory at 0x400 is 298
    .code16
    movw $0x012a, 0x400
    mov $42, %ax
    hlt
