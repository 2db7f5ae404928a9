"""The asyncio shell: runs the kernel, executes steps, and offers Context and handler."""
