# Spins forever in long mode without an exit: the watchdog must stop it.
# mode: long
# expect-status: 5
# expect-stderr: did not halt within
    .code64
1:  jmp 1b
