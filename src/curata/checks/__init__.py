"""curata.checks."""
