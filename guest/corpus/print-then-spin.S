# Prints one line, then spins: the output so far must still reach stdout before the timeout.
# mode: long
# expect-status: 5
# expect-stdout: hi\n
# expect-stderr: after 3 exits
    .code64
    mov $0xe9, %dx
    mov $'h', %al
    out %al, (%dx)
    mov $'i', %al
    out %al, (%dx)
    mov $'\n', %al
    out %al, (%dx)
1:  jmp 1b
