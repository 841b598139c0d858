"""Dialogs, built in code (no .ui files) so that headless tests can drive them."""
