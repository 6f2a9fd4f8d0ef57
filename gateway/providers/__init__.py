"""Provider adapters (translate only) and the upstream HTTP transports."""
