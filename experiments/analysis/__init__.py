"""Analysis scripts over collected data and finished runs (return statistics, learning curves)."""
