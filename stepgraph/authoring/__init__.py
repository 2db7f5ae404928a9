"""Authoring styles that compile to the kernel's Graph."""
