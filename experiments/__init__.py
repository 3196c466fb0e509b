"""ringrl experiments package."""
