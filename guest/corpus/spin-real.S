# Spins forever in real mode (emulated by PVM hosts): the watchdog must stop it.
# mode: real
# expect-status: 5
# expect-stderr: did not halt within
    .code16
1:  jmp 1b
