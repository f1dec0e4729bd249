"""The methods, each built on the core: one module per paper (import from the modules)."""
