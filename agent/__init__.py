"""ringrl agent package."""
