"""Seed data: the starting template catalogue, the demo tenant and plugin defaults, and their loader."""
