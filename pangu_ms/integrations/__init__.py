"""Bridges to other frameworks (MindFormers registry / Trainer)."""
