"""Packshot data: source images and their refs, packshot planning, reverse source lineage."""
