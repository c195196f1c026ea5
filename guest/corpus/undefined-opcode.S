# Executes UD2. Without an IDT the #UD cannot be delivered, which becomes a triple fault.
# mode: long
# expect-status: 4
# expect-stderr: triple fault (KVM_EXIT_SHUTDOWN) at RIP
    .code64
    ud2
