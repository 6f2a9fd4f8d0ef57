"""A plugin module that fails while it is imported (not an ImportError)."""

raise RuntimeError("this module cannot be imported")
