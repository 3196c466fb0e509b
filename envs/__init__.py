"""ringrl envs package."""
