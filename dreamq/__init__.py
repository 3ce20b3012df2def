"""The dreamq command line."""
