"""Test doubles of outside services (standard library only)."""
