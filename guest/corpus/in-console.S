# Reads from the console port: it is output-only, so the VMM refuses the IN.
# mode: long
# expect-status: 4
# expect-stderr: IN of 1 byte(s) from port 0xe9
    .code64
    mov $0xe9, %dx
    in (%dx), %al
    hlt
