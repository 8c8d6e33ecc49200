"""Assistants: their versioned definitions and the runtime that turns a message into a reply."""
