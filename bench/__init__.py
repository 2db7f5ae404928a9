"""stepgraph's benchmark harness.

``python -m bench`` (``make bench``) times stepgraph against plain asyncio doing the same
logical work in the same process, and measures the memory a pending event costs.
``python -m bench.peers`` (``make bench-peers``) compares stepgraph with other workflow
frameworks, installed into a separate environment. Results land in ``bench/results/``.
"""
