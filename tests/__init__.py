"""stepgraph's test suite (a package so that tests can import ``tests.kernel_harness``)."""
