"""Built-in fusions plugins."""
