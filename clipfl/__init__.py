"""clipfl."""
