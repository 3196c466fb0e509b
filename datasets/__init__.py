"""ringrl datasets package."""
