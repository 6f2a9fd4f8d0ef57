"""Shared state backends: in-process memory, or Redis through atomic Lua scripts."""
