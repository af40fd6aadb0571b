"""Orchestration only: build the task, fit, test, save, aggregate.

Nothing is imported here, so that `import runner.<module>` stays light (the config checks, the
CLI's help and its error messages load no torch, Lightning or W&B). The run itself is
`runner.run.run` (`from runner.run import run`).
"""
