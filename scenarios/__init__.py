"""Scenario apps (marketing, e-commerce, education) on top of the job API, with a small shared core."""
