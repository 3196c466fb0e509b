"""ringrl ring package."""
