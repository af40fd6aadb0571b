"""Orchestration only: build the task, fit, test, save, aggregate."""

from runner.run import run

__all__ = ["run"]
