# The 16-bit guest (real mode): the same program with a 2-byte result. CS = DS = 0, so
# offsets are physical addresses.
    .code16
    .globl _start
_start:
    mov $msg, %si
    mov $msg_len, %cx
    mov $0xe9, %dx
1:  lodsb
    out %al, (%dx)
    loop 1b
    movw $42, 0x400
    mov $42, %ax
2:  hlt
    jmp 2b
msg:
    .ascii "Hello, world!\n"
    .set msg_len, . - msg
