"""llm-gateway: a fast OpenAI-compatible LLM inference gateway."""

__version__ = "0.1.0"
