# The 32-bit guest (protected and paged32 modes): the same program as the long-mode guest,
# with a 4-byte result. Flat segments (or an identity map) make addresses physical.
    .code32
    .globl _start
_start:
    mov $msg, %esi
    mov $msg_len, %ecx
    mov $0xe9, %dx
1:  lodsb
    out %al, (%dx)
    loop 1b
    movl $42, 0x400
    mov $42, %eax
2:  hlt
    jmp 2b
msg:
    .ascii "Hello, world!\n"
    .set msg_len, . - msg
