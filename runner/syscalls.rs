//! Syscall names and numbers for the three x86 syscall ABIs (being written).
