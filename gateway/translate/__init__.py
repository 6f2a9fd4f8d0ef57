"""Translation between the OpenAI wire format and other providers' formats. Pure; no I/O.

common.py     helpers every translator needs: OpenAI chunk frames, data URLs,
              safe URL path segments, ids, usage dicts, key scrubbing
anthropic.py  OpenAI chat  -> Anthropic Messages (request), and Anthropic
              answers/streams -> OpenAI (used by providers/anthropic.py)
gemini.py     OpenAI chat/embeddings <-> Gemini generateContent/embedContent
messages.py   Anthropic Messages -> OpenAI chat (request), and OpenAI answers/
              streams -> Anthropic (used by api/messages.py to put any provider
              behind ``POST /v1/messages``)

Adapters in ``gateway/providers`` call these; they never send anything.
"""
