"""Why the keyword-spotting ResNet lost to the LSTM on synth_commands, and what fixed it (issue 30, item 6).

Every number comes from the harness itself (``python -m harness run`` through ``harness.cli.main``):
the task's budget (4 epochs, batch 64), AdamW with linear warm-up and cosine decay, gradient clipping
at 1.0, the shared log-mel front end with SpecAugment, the speaker-independent test split. Each
variant below is registered as a model of its own (this file is also the ``--plugin`` that registers
them), so that its records are told apart by name:

- ``before*``: the published ``kws_resnet`` up to this study (``resnet``'s staged blocks, widths
  53/106/212 with stride 2 between stages, after res8's 4x3 average pool), and one change each;
- ``res15*``: Tang & Lin's res15 as castorini/honk builds it (conv-ReLU-BN without scale or shift,
  the residual sum before the BatchNorm), width 85 after res8's 4x3 pool, and one change each;
  ``res15_basic`` is the res15 layout with He et al.'s block internals, which became ``kws_resnet``;
- ``final*``: the new ``kws_resnet`` with one change each; ``kws_resnet``: the registered model.

The study, in the order it ran (one process at a time, OMP_NUM_THREADS=1, on a shared 2-core CPU):

    python scripts/kws_study.py --variants before,res15 --fractions 0.1
    python scripts/kws_study.py --variants before_lr5e-3,before_lr1e-2,before_lr2e-2,\
        res15_lr5e-3,res15_lr1e-2,res15_lr2e-2,res15_lr5e-4
    python scripts/kws_study.py --variants before_ones,before_masks,before_nospec,\
        res15_masks,res15_nospec,res15_nodil,res8_w125,res26_w62
    python scripts/kws_study.py --variants before_ones,res15 --fractions 0.3,1
    python scripts/kws_study.py --variants res15_affine,res15_basic --fractions 0.1,0.3
    python scripts/kws_study.py --variants kws_resnet --fractions 0.1,0.3,1 --seeds 3
    python scripts/kws_study.py --variants final_wd0,final_wd5e-2,final_inbn,final_nospec --fractions 0.1
    python scripts/kws_study.py --variants final_lr5e-3 --fractions 0.3
    python scripts/kws_study.py --table              # the table of every record under --out

What it found: the staged ResNet was at chance with 10% of the data because each residual branch's
last BatchNorm scale started at 0 (``before_ones``: 0.04 -> 0.22); no learning rate from 2e-3 to
2e-2 moved it. honk's res15 blocks learn more slowly under this budget than He et al.'s blocks at
the same layout (``res15`` vs ``res15_basic``: 0.60 vs 0.81 with 30%); without dilation the
averaged 4x3-pooled map sees too little of the word (``res15_nodil``, ``res8_w125``, ``res26_w62``:
at chance with 10%). The new ``kws_resnet`` (3 seeds): 0.21 / 0.76 / 0.93 with 10% / 30% / all of the
data, against the LSTM classifier's published 0.20 / 0.50 / 0.85. Around it (one seed): weight decay
0, 5e-4 or 5e-2 and a BatchNorm on the (already standardised) input change little (0.19-0.21 with
10%); lr 5e-3 does no better than 2e-3 with 30% (0.74 vs 0.72-0.81); SpecAugment off: 0.31 vs 0.19
with 10% (the task's option, shared by every model).
SpecAugment's masks are the same for every batch when a model draws no random numbers of its own
(``AudioClassificationTask._augment`` restores torch's generator after drawing them); ``*_masks``
(dropout 1e-6, which draws) measures what that costs.

The records go to ``--out`` (default /tmp/kws/study), never to results/; the table gives the mean
test top-1 over the seeds found for each (variant, fraction), the seeds, the parameter count and
the mean training time, beside the published rows of ``results/leaderboard_speech.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from torch import Tensor, nn

from baselines.cnn import KWS_RESNET_PRESETS, KeywordResNet, ResNet
from zoo.registry import register_model

TASK = "synth_commands"
BEFORE = dict(width=53, blocks=1, stem_pool=(4, 3), dropout=0.0)  # the published tiny preset (res8 depth)
FINAL = dict(KWS_RESNET_PRESETS["tiny"])  # the new kws_resnet's tiny preset
RES15 = dict(width=85, layers=13, stem_pool=(4, 3), dilation=True, dropout=0.0)  # res15 at 849k, 4x3 pool


@dataclass(frozen=True)
class Variant:
    """One configuration: which network, its tiny preset, its lr and weight decay, task options."""

    net: str  # "before" (staged ResNet), "before_ones" (its residual BN scales start at 1, not 0),
    #           "res15" (HonkRes15), "res15_affine", "res15_basic", "final" (the new KeywordResNet),
    #           "final_inbn" or "registered" (kws_resnet itself)
    opts: dict[str, Any] = field(default_factory=dict)
    lr: float = 2e-3
    weight_decay: float = 5e-4
    task_opt: dict[str, Any] = field(default_factory=dict)
    note: str = ""


VARIANTS: dict[str, Variant] = {
    # the staged ResNet as published, and one change at a time
    "before": Variant("before", BEFORE, note="published kws_resnet: lr 2e-3, wd 5e-4"),
    "before_lr5e-3": Variant("before", BEFORE, lr=5e-3),
    "before_lr1e-2": Variant("before", BEFORE, lr=1e-2),
    "before_lr2e-2": Variant("before", BEFORE, lr=2e-2),
    "before_wd0": Variant("before", BEFORE, weight_decay=0.0),
    "before_wd5e-2": Variant("before", BEFORE, weight_decay=5e-2),
    "before_nospec": Variant("before", BEFORE, task_opt={"spec_augment": False}),
    "before_masks": Variant("before", {**BEFORE, "dropout": 1e-6}, note="dropout 1e-6: SpecAugment masks vary"),
    "before_ones": Variant("before_ones", BEFORE, note="residual branches' last BN scale starts at 1, not 0"),
    "before_pool22": Variant("before", {**BEFORE, "stem_pool": (2, 2), "width": 53}, note="2x2 stem pool"),
    # res15 (Tang & Lin) at the matched parameter count, and one change at a time
    "res15": Variant("res15", RES15, note="res15, width 85, 4x3 pool, dilated; lr 2e-3, wd 5e-4"),
    "res15_lr5e-3": Variant("res15", RES15, lr=5e-3),
    "res15_lr1e-2": Variant("res15", RES15, lr=1e-2),
    "res15_lr2e-2": Variant("res15", RES15, lr=2e-2),
    "res15_lr5e-4": Variant("res15", RES15, lr=5e-4),
    "res15_wd0": Variant("res15", RES15, weight_decay=0.0),
    "res15_wd5e-2": Variant("res15", RES15, weight_decay=5e-2),
    "res15_nodil": Variant("res15", {**RES15, "dilation": False}),
    "res15_nospec": Variant("res15", RES15, task_opt={"spec_augment": False}),
    "res15_masks": Variant("res15", {**RES15, "dropout": 1e-6}, note="dropout 1e-6: SpecAugment masks vary"),
    "res15_affine": Variant("res15_affine", RES15, note="BatchNorm with scale and shift"),
    "res15_basic": Variant("res15_basic", {**RES15, "layers": 12, "width": 88},
                           note="He et al.'s block internals (conv-BN-ReLU, affine BN), 6 blocks, width 88"),
    "res8_w125": Variant("res15", {**RES15, "layers": 6, "width": 125, "dilation": False},
                         note="honk's res8 depth at width 125, undilated"),
    "res26_w62": Variant("res15", {**RES15, "layers": 24, "width": 62, "dilation": False},
                         note="honk's res26 depth at width 62, undilated"),
    # the new kws_resnet (res15 layout, He et al.'s blocks; registered below as it is) and one change each
    "final_lr1e-3": Variant("final", FINAL, lr=1e-3),
    "final_lr5e-3": Variant("final", FINAL, lr=5e-3),
    "final_wd0": Variant("final", FINAL, weight_decay=0.0),
    "final_wd5e-2": Variant("final", FINAL, weight_decay=5e-2),
    "final_inbn": Variant("final_inbn", FINAL, note="BatchNorm over the mel bins of the input"),
    "final_nospec": Variant("final", FINAL, task_opt={"spec_augment": False}),
    "kws_resnet": Variant("registered", note="the registered kws_resnet with its defaults"),
}


def model_name(variant: str) -> str:
    if VARIANTS[variant].net == "registered":
        return "kws_resnet"
    return "kws_" + variant.replace("-", "m").replace(".", "p")


class StagedKeywordResNet(ResNet):
    """The published kws_resnet before this study: forward(x (B, T, F)) -> logits (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.unsqueeze(1))


class StagedOnes(StagedKeywordResNet):
    """The same, but each residual branch's last BatchNorm scale starts at 1 (PyTorch's default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for block in self.layers:
            nn.init.ones_(block.conv2[1].weight)


class HonkRes15(nn.Module):
    """Tang & Lin's keyword-spotting ResNet as castorini/honk's ``SpeechResModel`` builds it.

    forward(x (B, T, F)) -> logits (B, num_classes). The features as a one-channel image; a 3x3
    convolution to ``width`` maps and ReLU; an average pool (``stem_pool``, kernel = stride); then
    ``layers`` 3x3 convolutions (res8: 6, res15: 13, res26: 24), each followed by ReLU and a BatchNorm
    without affine parameters, with a residual connection closed after every second one (before its
    BatchNorm, from the last sum); the average over time and frequency and a linear layer.
    ``dilation``: convolution i (from 0) dilated by 2^(i // 3), as in res15.
    """

    def __init__(self, num_classes: int, *, width: int = 45, layers: int = 13, stem_pool: tuple[int, int] = (1, 1),
                 dilation: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(tuple(stem_pool))
        rates = [2 ** (i // 3) if dilation else 1 for i in range(layers)]
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d, bias=False) for d in rates)
        self.norms = nn.ModuleList(nn.BatchNorm2d(width, affine=False) for _ in rates)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F) -> (B, num_classes)
        x = self.pool(self.stem(x.unsqueeze(1)).relu())  # (B, w, T/p_t, F/p_f)
        skip = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms), 1):
            x = conv(x).relu()
            if i % 2 == 0:  # every second convolution closes a residual connection
                x = skip = x + skip
            x = norm(x)
        return self.head(self.dropout(x.mean((2, 3))))


class Res15Affine(HonkRes15):
    """res15 with BatchNorm scales and shifts (Tang & Lin's have none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norms = nn.ModuleList(nn.BatchNorm2d(n.num_features) for n in self.norms)


class DilatedBasic(nn.Module):
    """He et al.'s basic block at one width, both convolutions dilated: conv-BN-ReLU-conv-BN, + x, ReLU."""

    def __init__(self, width: int, rates: tuple[int, int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d, bias=False) for d in rates)
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for _ in rates)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norms[0](self.convs[0](x)).relu()
        return (self.norms[1](self.convs[1](y)) + x).relu()


class Res15Basic(nn.Module):
    """res15's widths, pool and dilations with He et al.'s block internals: forward((B, T, F)) -> (B, C)."""

    def __init__(self, num_classes: int, *, width: int, layers: int, stem_pool: tuple[int, int],
                 dilation: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AvgPool2d(tuple(stem_pool)))
        rates = [2 ** (i // 3) if dilation else 1 for i in range(layers)]
        self.blocks = nn.Sequential(*[DilatedBasic(width, (rates[i], rates[i + 1])) for i in range(0, layers - 1, 2)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x.unsqueeze(1))).mean((2, 3)))


class InputNormResNet(KeywordResNet):
    """The new kws_resnet with a BatchNorm over the mel bins of its input (the task already
    standardises each bin with the training split's statistics)."""

    def __init__(self, num_classes: int, **cfg: Any) -> None:
        super().__init__(num_classes, **cfg)
        self.input_norm = nn.BatchNorm1d(40)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F)
        return super().forward(self.input_norm(x.transpose(1, 2)).transpose(1, 2))


def register_variants() -> None:
    """Each variant but the registered one as a model ``kws_<variant>`` (imported as a --plugin)."""
    for name, v in VARIANTS.items():
        if v.net == "registered":
            continue
        net = {"before": StagedKeywordResNet, "before_ones": StagedOnes, "res15": HonkRes15,
               "res15_affine": Res15Affine, "res15_basic": Res15Basic, "final": KeywordResNet,
               "final_inbn": InputNormResNet}[v.net]

        def build(spec: dict[str, Any], _net=net, **cfg: Any) -> nn.Module:
            channels = (1,) if issubclass(_net, ResNet) else ()  # ResNet takes the input channels first
            return _net(*channels, spec["num_classes"], **cfg)

        register_model(model_name(name), family="baseline", kinds=("classification",), modalities=("audio",),
                       lr=v.lr, weight_decay=v.weight_decay, width="width",
                       presets={size: dict(v.opts) for size in ("tiny", "small", "base")})(build)


if __name__ != "__main__":
    register_variants()


def suite_text(variants: list[str], fractions: list[float], seeds: int, seed_start: int, epochs: int | None) -> str:
    """One [[run]] table per group of variants that share task options (one data set-up and one
    published leaderboard per group and fraction), every fraction in it."""
    groups: dict[str, list[str]] = {}
    for name in variants:
        groups.setdefault(json.dumps(VARIANTS[name].task_opt, sort_keys=True), []).append(name)
    lines = []
    for task_opt, names in groups.items():
        lines += ["[[run]]", 'domain = "speech"', f'tasks = ["{TASK}"]',
                  "models = [" + ", ".join(f'"{model_name(n)}"' for n in names) + "]", 'plugin = ["kws_study"]',
                  f"seeds = {seeds}", f"seed_start = {seed_start}",
                  f"train_fraction = [{', '.join(map(str, fractions))}]"]
        if epochs is not None:
            lines.append(f"epochs = {epochs}")
        if json.loads(task_opt):
            pairs = ", ".join(f"{k} = {json.dumps(x)}" for k, x in json.loads(task_opt).items())
            lines.append(f"task_opt = {{{pairs}}}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from harness.cli import main
    sys.path.insert(0, str(ROOT / "scripts"))  # so that the cells can import this file as the plugin
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "kws_study.toml"
    suite.write_text(suite_text(args.variants, args.fractions, args.seeds, args.seed_start, args.epochs))
    os.chdir(ROOT)  # the synthesised data in ./data is reused
    return main(["run", "--config", str(suite), "--out", str(args.out), "--data-dir", str(args.data_dir), "--quiet"])


def variant_of(record: dict[str, Any]) -> str | None:
    """The variant a record belongs to: its model name, and its task options for the registered one."""
    opts = record["config"]["task_options"]
    for name, v in VARIANTS.items():
        expected = {"spec_augment": True, **v.task_opt}
        if model_name(name) == record["model"] and all(opts.get(k) == x for k, x in expected.items()):
            return name
    return None


def collect(out: Path, epochs: int | None) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """{(variant, train fraction): [records]} of the finished cells under ``out``."""
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for path in sorted((out / "runs" / "speech" / TASK).glob("*.json")):
        record = json.loads(path.read_text())
        name = variant_of(record)
        other_budget = epochs is not None and record["config"]["epochs"] != epochs
        if record.get("status") != "ok" or name is None or other_budget:
            continue
        cells.setdefault((name, float(record["train_fraction"] or 1.0)), []).append(record)
    return cells


def published() -> dict[float, dict[str, float]]:
    """{fraction: {model: mean top1}} of the published synth_commands rows (results/, read only)."""
    rows: dict[float, dict[str, float]] = {}
    with open(ROOT / "results" / "leaderboard_speech.csv") as f:
        for row in csv.DictReader(f):
            if row["task"] == TASK and row["tuning"] == "default" and row["size"].startswith("tiny"):
                rows.setdefault(float(row["train_fraction"] or 1), {})[row["model"]] = float(row["metric_mean"])
    return rows


def table(out: Path, epochs: int | None) -> None:
    cells = collect(out, epochs)
    board = published()
    print(f"{'variant':16s} {'frac':>5s} {'top1':>7s}  {'seeds':12s} {'per seed':26s} {'params':>9s} {'train s':>8s}"
          f"  {'lr':>7s} {'wd':>7s}  note")
    for (name, frac), records in sorted(cells.items(), key=lambda kv: (list(VARIANTS).index(kv[0][0]), kv[0][1])):
        records.sort(key=lambda r: r["seed"])
        top1 = [r["test"]["top1"] for r in records]
        cfg = records[0]["config"]
        print(f"{name:16s} {frac:5.2f} {mean(top1):7.4f}  {' '.join(str(r['seed']) for r in records):12s} "
              f"{' '.join(f'{t:.3f}' for t in top1):26s} {records[0]['param_count']:9,d} "
              f"{mean(r['train_time_s'] for r in records):8.1f}  {cfg['lr']:7.0e} {cfg['weight_decay']:7.0e}  "
              f"{VARIANTS[name].note}")
    print("\npublished (results/leaderboard_speech.csv, 3 seeds, 2 threads):")
    for frac, models in sorted(board.items()):
        print(f"  fraction {frac:4.2f}: " + ", ".join(f"{m} {x:.4f}" for m, x in sorted(models.items())))
    threads = sorted({r["num_threads"] for rs in cells.values() for r in rs})
    print(f"\nthreads in the records above: {threads}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", type=lambda s: s.split(","), default=["before", "kws_resnet"])
    p.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")], default=[0.1])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the task's budget (4)")
    p.add_argument("--out", type=Path, default=Path("/tmp/kws/study"))
    p.add_argument("--data-dir", type=Path, default=ROOT / "data")
    p.add_argument("--table", action="store_true", help="only print the table of the records in --out")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return args


if __name__ == "__main__":
    arguments = parse()
    code = 0 if arguments.table else run(arguments)
    table(arguments.out, arguments.epochs)
    sys.exit(code)
