"""Peer comparison: stepgraph against other Python workflow frameworks.

``python -m bench.peers`` installs the peers into ``bench/.peers-venv`` (kept out of git),
re-executes itself there and times W1 to W4 for stepgraph, the plain-asyncio baseline and each
peer in one process. One module per peer expresses the workloads in that peer's own API; a
peer whose import fails is skipped with the reason.
"""
