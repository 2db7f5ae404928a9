"""Conformance tests of guarantees G2-G11 for executor graphs (``WorkflowBuilder``)."""
