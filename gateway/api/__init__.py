"""The Litestar edge: thin controllers that call the pipeline stages in order."""
