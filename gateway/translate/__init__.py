"""Translation between the OpenAI wire format and other providers' formats. Pure; no I/O.

common.py     helpers every translator needs: request parts, OpenAI answers and
              chunk frames, data URLs, safe URL path segments, ids, usage
              dicts, key scrubbing
upstream.py   provider failures: error statuses mapped alike, bodies and stream
              events that do not decode, the SSE feed loop
anthropic.py  OpenAI chat  -> Anthropic Messages (request), and Anthropic
              answers/streams -> OpenAI (used by providers/anthropic.py)
gemini_request.py     OpenAI chat -> Gemini generateContent (request)
gemini_response.py    Gemini answers, streams and errors -> OpenAI
gemini_embeddings.py  OpenAI embeddings <-> Gemini embedContent, and the model list
messages.py   Anthropic Messages -> OpenAI chat (request), and OpenAI answers/
              streams -> Anthropic (used by api/messages.py to put any provider
              behind ``POST /v1/messages``)

Adapters in ``gateway/providers`` call these; they never send anything.
"""
