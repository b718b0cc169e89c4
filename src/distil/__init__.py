"""distil."""
