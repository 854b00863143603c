"""Task specs of every kind and input, as the tasks build them (tasks/base.py names the keys of each
kind), and which of them each registered model serves: what the per-model tests parametrise over, so
that a model added to the registry is checked without editing any test table."""

from __future__ import annotations

from zoo.registry import get_model_entry, list_models

SPECS: dict[str, dict] = {
    "digits": {"kind": "classification", "modality": "image", "input_shape": (1, 8, 8), "num_classes": 10},
    "cifar": {"kind": "classification", "modality": "image", "input_shape": (3, 32, 32), "num_classes": 10},
    "keywords": {"kind": "classification", "modality": "audio", "input_shape": (101, 40), "num_classes": 35},
    "digit_strings": {"kind": "transcription", "modality": "audio", "input_dim": 40, "vocab_size": 13, "blank_id": 0,
                      "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_tgt_len": 9, "max_frames": 400},
    "chars": {"kind": "language_modeling", "modality": "text", "vocab_size": 100, "block_size": 128},
    "bytes": {"kind": "language_modeling", "modality": "text", "vocab_size": 256, "block_size": 64},
    "reversal": {"kind": "seq2seq", "modality": "text", "src_vocab_size": 16, "tgt_vocab_size": 16,
                 "max_src_len": 20, "max_tgt_len": 21, "pad_id": 0, "bos_id": 1, "eos_id": 2},
    "two_vocabs": {"kind": "seq2seq", "modality": "text", "src_vocab_size": 64, "tgt_vocab_size": 40,
                   "max_src_len": 30, "max_tgt_len": 12, "pad_id": 0, "bos_id": 1, "eos_id": 2},
    "cartpole": {"kind": "offline_rl", "modality": "state", "state_dim": 4, "act_dim": 2, "discrete": True,
                 "max_ep_len": 500, "context_len": 20},
    "continuous": {"kind": "offline_rl", "modality": "state", "state_dim": 11, "act_dim": 3, "discrete": False,
                   "max_ep_len": 1000, "context_len": 20},
}


def served(name: str) -> list[str]:
    """The specs model ``name`` serves (by the kinds and inputs it declares)."""
    entry = get_model_entry(name)
    return [s for s, spec in SPECS.items() if entry.supports(spec["kind"], spec["modality"])]


def cases(names: list[str] | None = None) -> list[tuple[str, str]]:
    """(model, spec) for every registered model (or ``names``) and every spec it serves."""
    return [(name, s) for name in (names or list_models()) for s in served(name)]


def spec_of(name: str) -> dict:
    """The first spec model ``name`` serves."""
    return SPECS[served(name)[0]]
