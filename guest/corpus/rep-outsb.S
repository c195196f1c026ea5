# Prints the greeting with one string instruction. KVM emulates string OUT one element per
# exit (on VMX, SVM and PVM alike): 14 exits of one byte. A loop must still print all of an
# exit's data: `rep ins` read-ahead and SEV-ES guests do give counts above 1.
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
