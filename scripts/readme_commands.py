"""Run every command of the README's ``bash`` blocks, on tiny budgets, as a newcomer on a fresh clone would.

Each ``python -m harness ...`` line runs in a scratch folder that holds a copy of ``results/`` (so that
``report``, ``compare`` and ``examples`` read the published records), the README's own plugin file
(``my_models.py``, from its ``python`` block) and tiny copies of ``suites/`` (one seed, two steps,
two trials), with the budget flags of the line replaced by ``--seeds 1 --steps 2`` (``tune``:
``--trials 2``; ``--tune N``: ``--tune 2``) and one shared ``--data-dir``. A line that cannot run
here is skipped with the reason (a download, a GPU, a cluster, your own data); everything else must
exit 0. CI runs this after the tests (``.ci/run``); it takes about ten minutes on 2 CPU cores, most of
it generating the offline datasets once (speech synthesis, RL rollouts).

    python scripts/readme_commands.py              # run them all
    python scripts/readme_commands.py --list       # print what would run, and what is skipped and why
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = [  # (pattern in the line, why it cannot run here); the first match wins
    (r"^pip |^python -m pytest|^bash scripts/gpu_check.sh", "installs, or is run by CI itself (the tests, "
                                                            "tests/test_gpu_check.py)"),
    (r"--download", "downloads a dataset (the loaders are tested on small files in the real format)"),
    (r"--device cuda|--gpus-per-cell", "needs a GPU (scripts/gpu_check.sh runs it on a lent one)"),
    (r"--ray-address|--executor ray", "needs Ray workers (tests/test_executors.py runs a local Ray executor)"),
    (r"^torchrun", "needs 8 GPUs or 2 nodes (tests/test_distributed.py runs --ddp over 2 CPU processes)"),
    (r"~/my_", "reads your own data folder (tests/test_vision_data.py and tests/test_speech_data.py write one)"),
]
BUDGET = re.compile(r"\s--(seeds|epochs|steps|trials|tune)(\s+|=)\S+")


def commands(readme: Path) -> list[str]:
    """Every command line of the README's bash blocks (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in line.split("&&")]
    return out


def skipped(line: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, line)), None)


def tiny(line: str, data: Path) -> list[str]:
    """The argv that runs ``line`` on a tiny budget."""
    argv = shlex.split(BUDGET.sub("", " " + line).strip())
    if argv[:3] != ["python", "-m", "harness"]:
        raise ValueError(f"not a harness command: {line}")
    command = argv[3]
    if command in ("run", "tune"):
        if "--config" not in argv:
            argv += ["--seeds", "1", "--steps", "2"]
        if command == "tune":
            argv += ["--trials", "2"]
        elif "--tune" in line:
            argv += ["--tune", "2"]
        argv += ["--quiet", "--data-dir", str(data)]
    if command == "bench":
        argv += ["--warmup", "1", "--iters", "1", "--seq-lens", "16"]
    return [sys.executable, *argv[1:]]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def tiny_suites(target: Path) -> None:
    """Copies of suites/*.toml with one seed, two steps and two tuning trials per [[run]]."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / "suites").glob("*.toml"):
        runs = tomllib.loads(path.read_text())["run"]
        lines = []
        for run in runs:
            run = {k: v for k, v in run.items() if k not in ("epochs", "steps", "seeds")}
            run.update(seeds=1, steps=2, **({"tune": 2} if "tune" in run else {}))
            lines += ["[[run]]", *(f"{k} = {_toml(v)}" for k, v in run.items()), ""]
        (target / path.name).write_text("\n".join(lines))


def plugin_file(readme: Path) -> str:
    """The README's plugin example (the python block that starts with '# my_models.py')."""
    for block in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S):
        if block.startswith("# my_models.py"):
            return block
    raise SystemExit("README.md has no '# my_models.py' block")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--list", action="store_true", help="only list what would run and what is skipped")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per command (default 1200)")
    args = parser.parse_args(argv)
    lines = commands(args.readme)
    work = Path(tempfile.mkdtemp(prefix="readme-commands-"))
    data = work / "data"
    failures, ran = [], 0
    if not args.list:
        shutil.copytree(ROOT / "results", work / "results", ignore=shutil.ignore_patterns("*.ckpt", "*.lock"))
        tiny_suites(work / "suites")
        (work / "my_models.py").write_text(plugin_file(args.readme))
    for line in lines:
        why = skipped(line)
        if why:
            print(f"skip  {line}\n      ({why})")
            continue
        command = tiny(line, data)
        print(f"run   {line}\n      {shlex.join(command[1:])}", flush=True)
        if args.list:
            continue
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])}
        try:
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout)
            code, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            code, tail = "timeout", ""
        ran += 1
        print(f"      exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0 or "Traceback" in tail:
            failures.append(line)
            print(tail)
    if not args.list:
        shutil.rmtree(work, ignore_errors=True)
        print(f"{ran} README commands ran, {len(failures)} failed" + (": " + "; ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
