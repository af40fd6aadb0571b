"""Aggregate a sweep: `python -m runner.report <sweep dir>`.

Reads every `results.json` under the folder, groups them by task, and calls the task's
`tasks.<name>.analysis.summarize(results) -> DataFrame` (plus optional `notes(summary)` and
`plot(summary, results, out_dir)`); writes `summary.csv`, `summary.md` and the plots into the
sweep folder, and lists failed jobs.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from runner.io import atomic_write_text


def load_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """Return every results.json under `sweep_dir`, each with its `job_dir`, in path order."""
    out = []
    for path in sorted(sweep_dir.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            data = {"status": "unreadable", "error": str(err), "task": None}
        data["job_dir"] = str(path.parent)
        out.append(data)
    return out


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """Return `frame` as a GitHub markdown table (floats with `digits` decimals)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.{digits}f}"
        return str(v)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def report(sweep_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Write summary.csv / summary.md / plots for every task in the sweep; return the tables."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SystemExit(f"no such sweep directory: {sweep_dir}")
    results = load_results(sweep_dir)
    if not results:
        raise SystemExit(f"no results.json under {sweep_dir}")
    failed = [r for r in results if r.get("status") != "completed"]
    tables: dict[str, pd.DataFrame] = {}
    md = [f"# Sweep summary: {sweep_dir}\n",
          f"{len(results)} jobs: {len(results) - len(failed)} completed, {len(failed)} failed\n"]
    tasks = sorted({r["task"] for r in results if r.get("task")})
    for task in tasks:
        task_results = [r for r in results if r.get("task") == task]
        try:
            analysis = importlib.import_module(f"tasks.{task}.analysis")
        except ModuleNotFoundError:
            analysis = None
        if analysis is None or not hasattr(analysis, "summarize"):
            summary = pd.DataFrame([{"job_dir": r["job_dir"], "status": r["status"],
                                     **(r.get("paper_metrics") or {})} for r in task_results])
        else:
            summary = analysis.summarize(task_results)
        tables[task] = summary
        suffix = "" if len(tasks) == 1 else f"_{task}"
        summary.to_csv(sweep_dir / f"summary{suffix}.csv", index=False)
        md += [f"## {task}\n", markdown_table(summary)]
        if analysis is not None and hasattr(analysis, "notes"):
            md.append(analysis.notes(summary))
        if analysis is not None and hasattr(analysis, "plot") and not summary.empty:
            for path in analysis.plot(summary, task_results, sweep_dir):
                md.append(f"![{path.stem}]({path.name})\n")
    if failed:
        md.append("## Failed jobs\n")
        md += [f"- `{r['job_dir']}`: {r.get('error', r.get('status'))}" for r in failed]
        md.append("")
    atomic_write_text(sweep_dir / "summary.md", "\n".join(md))
    print("\n".join(md))
    print(f"wrote {sweep_dir / 'summary.md'}")
    return tables


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m runner.report <sweep dir>."""
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__)
    parser.add_argument("sweep_dir", help="a multirun directory (holds one folder per job)")
    report(parser.parse_args(argv).sweep_dir)


if __name__ == "__main__":
    main()
