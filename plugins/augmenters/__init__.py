"""Built-in augmenters plugins."""
