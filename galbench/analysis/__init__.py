"""Analysis: statistics (pure functions), plots, and the report renderers."""
