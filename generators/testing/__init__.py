"""Public testing helpers for plugin authors: tiny real models and the contract kit."""
