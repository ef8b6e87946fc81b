"""Run many coding agents on one repository at once, each in its own git worktree."""

__version__ = "0.1.0"
