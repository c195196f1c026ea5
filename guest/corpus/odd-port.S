# Writes to the serial port 0x3f8, which this VMM does not serve.
# mode: long
# expect-status: 4
# expect-stderr: OUT of 1 byte(s) to port 0x3f8
    .code64
    mov $0x3f8, %dx
    mov $'x', %al
    out %al, (%dx)
    hlt
