"""Durable runs: frames, serializers, checkpoints and resuming (the runtime's side of stores)."""
