"""Golden journals: recorded runs that the kernel must keep replaying the same way."""
