# Spins forever in protected mode (emulated by PVM hosts): the watchdog must stop it.
# mode: protected
# expect-status: 5
# expect-stderr: did not halt within
    .code32
1:  jmp 1b
