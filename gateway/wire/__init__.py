"""msgspec Structs for the public wire contract (OpenAI and Anthropic shapes). No logic."""
