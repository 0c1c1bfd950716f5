"""Judge-based scores of research reports (RACE-style relative scoring)."""
