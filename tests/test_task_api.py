"""What each task declares for the harness to show: how its examples print (``format_examples``) and
what its metrics measure (``TaskReport.metric_units``, ``TaskReport.metric_label``)."""

from __future__ import annotations

import json

import torch

import tasks  # noqa: F401  (registers every task)
from tasks import ClassificationTask, Task, TaskReport, get_task_class, list_tasks
from tasks.base import REPORT_FIELDS

# What the report said each well-known metric measures before the tasks declared it themselves.
UNITS = {"top1": "accuracy", "top5": "top-5 accuracy", "exact_match": "exact-match rate", "wer": "word error rate",
         "cer": "character error rate", "bpc": "bits per character", "normalized_return": "% of expert return"}

DECODED = {"decoded": [{"source": "abc", "target": "cba", "output": "cba"},
                       {"source": "ab", "target": "ba", "output": "bb"}]}
DECODED_LINES = ["ok  'abc' -> 'cba' (target 'cba')", "ERR 'ab' -> 'bb' (target 'ba')"]


# ----------------------------------------------------------------------------- metric units and labels

def test_metric_labels_name_split_metric_unit_and_direction():
    assert get_task_class("digits").report.metric_label("top1", True) == "test top1 (accuracy, higher is better)"
    assert (get_task_class("cifar10").report.metric_label("top5", True, "val")
            == "val top5 (top-5 accuracy, higher is better)")
    assert (get_task_class("synth_commands").report.metric_label("top1", True)
            == "test top1 (accuracy, higher is better)")
    assert (get_task_class("synth_digits").report.metric_label("wer", False, split="validation")
            == "validation wer (word error rate, lower is better)")
    assert (get_task_class("synth_digits").report.metric_label("cer", False)
            == "test cer (character error rate, lower is better)")
    assert (get_task_class("reverse").report.metric_label("exact_match", True)
            == "test exact_match (exact-match rate, higher is better)")
    assert (get_task_class("dates").report.metric_label("exact_match", True, "long")
            == "long exact_match (exact-match rate, higher is better)")
    assert (get_task_class("pystdlib").report.metric_label("bpc", False)
            == "test bpc (bits per character, lower is better)")
    assert (get_task_class("cartpole-mixed").report.metric_label("normalized_return", True)
            == "test normalized_return (% of expert return, higher is better)")
    assert (get_task_class("minari").report.metric_label("normalized_return", True)
            .startswith("test normalized_return (% of"))


def test_a_metric_without_declared_words_gets_only_its_direction():
    assert get_task_class("pystdlib").report.metric_label("loss", False) == "test loss (lower is better)"
    assert (get_task_class("reverse").report.metric_label("token_accuracy", True, "val")
            == "val token_accuracy (higher is better)")
    assert Task.report.metric_units == {}
    assert Task.report.metric_label("top1", True) == "test top1 (higher is better)"
    assert ClassificationTask.report.metric_label("top1", False) == "test top1 (accuracy, lower is better)"


def test_declared_units_are_the_reports_table_and_every_kind_declares_its_own():
    declared: dict[str, str] = {}
    for name in list_tasks():
        units = get_task_class(name).report.metric_units
        for metric, words in units.items():
            assert UNITS[metric] == words, (name, metric)
        declared.update(units)
    assert declared == UNITS
    by_kind = {get_task_class(n).kind: set(get_task_class(n).report.metric_units) for n in list_tasks()}
    assert by_kind == {"classification": {"top1", "top5"}, "seq2seq": {"exact_match"}, "transcription": {"wer", "cer"},
                       "language_modeling": {"bpc"}, "offline_rl": {"normalized_return"}}


# ----------------------------------------------------------------------------- the report apart from the task

def test_a_task_keeps_its_presentation_in_one_declared_value_apart_from_its_contract():
    for name in list_tasks():
        cls = get_task_class(name)
        assert isinstance(cls.report, TaskReport) and cls.report.description, name  # `harness list` shows it
        assert not any(f in vars(cls) for f in REPORT_FIELDS), name  # in-tree tasks use the new spelling
    rl = get_task_class("gamble-random").report
    assert rl.report_iqm and rl.leaderboard_metrics == ("controllability",) and "Paster" in rl.about
    assert get_task_class("cartpole-mixed-delayed").report.about.endswith(
        "BC and %BC do not read rewards.")


def test_a_plugin_task_written_before_task_report_keeps_its_presentation():
    class Old(ClassificationTask):  # the old spelling: presentation as class attributes (not registered)
        name, domain = "old", "test"
        description, about = "an old plugin task", "what it tests"
        metric_units = {"top1": "hit rate"}
        report_iqm, leaderboard_metrics = True, ["extra"]

    assert Old.report == TaskReport(description="an old plugin task", about="what it tests",
                                    metric_units={"top1": "hit rate"}, report_iqm=True,
                                    leaderboard_metrics=("extra",))
    assert ClassificationTask.report.description == ""  # the base is untouched

    class Older(Old):  # a subclass of it changes one thing and inherits the rest
        description = "its subclass"

    assert Older.report.about == "what it tests" and Older.report.description == "its subclass"


# ----------------------------------------------------------------------------- example printing

def test_base_and_tasks_without_text_examples_print_nothing():
    assert Task.format_examples({"anything": 1}) == []
    assert get_task_class("digits").format_examples({}) == []
    rl = {"tables": {"return_conditioning": [{"target_return": 9.0, "achieved_return": 8.0}]}, "episodes": 3}
    for name in ("cartpole-mixed", "pendulum-expert", "minari"):
        assert get_task_class(name).format_examples(rl) == []


def test_language_model_prints_its_prompt_and_sample_in_one_piece():
    ex = {"prompt": "def f(x):\n", "sample": "    return x\n", "train_chars": 100, "val_chars": 10, "vocab_size": 5}
    for name in ("pystdlib", "tinyshakespeare", "text_file"):
        assert get_task_class(name).format_examples(ex) == [
            "-- prompt --\ndef f(x):\n\n-- sample (temperature 0.8, top-k 20) --\n    return x\n"]
        assert get_task_class(name).format_examples({"train_chars": 100}) == []


def test_decoded_rows_print_one_line_each_marked_ok_or_err():
    for name in ("reverse", "sort", "addition", "dates", "synth_digits"):
        cls = get_task_class(name)
        assert cls.format_examples(DECODED) == DECODED_LINES, name
        assert cls.format_examples({"decoded": []}) == [] == cls.format_examples({})
    speech = {"decoded": [{"source": "test utterance 0", "target": "one two", "output": "one two"},
                          {"source": "test utterance 1", "target": "nine", "output": ""}]}
    assert get_task_class("synth_digits").format_examples(speech) == [
        "ok  'test utterance 0' -> 'one two' (target 'one two')", "ERR 'test utterance 1' -> '' (target 'nine')"]
    # one implementation for every task that decodes, not copies
    implementations = {get_task_class(n).format_examples.__func__ for n in ("reverse", "dates", "synth_digits")}
    assert len(implementations) == 1


class _Blank(torch.nn.Module):
    """A seq2seq 'model' that emits EOS at once: every decoded output is empty."""

    def generate(self, src, src_pad, max_len, beam_size=1):
        return torch.full((len(src), 1), 2, dtype=torch.long)


def test_what_a_seq2seq_task_records_prints_through_its_format(tmp_path):
    task = get_task_class("reverse")(data_dir=tmp_path)
    task.setup()
    ex = json.loads(json.dumps(task.examples(_Blank(), torch.device("cpu"), seed=0)))  # as a record holds it
    lines = type(task).format_examples(ex)
    assert len(lines) == 5
    for line, row in zip(lines, ex["decoded"]):
        assert line == f"ERR {row['source']!r} -> '' (target {row['source'][::-1]!r})"
