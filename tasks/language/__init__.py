"""Language: character-level language modelling (``lm``) and generated sequence-to-sequence problems
(``seq2seq``, with their data made by ``seq2seq_data``)."""

from .lm import CharLMTask, PyStdlib, TextFile, TinyShakespeare, stdlib_files
from .seq2seq import BOS, EOS, PAD, SPECIALS, Addition, Dates, Reverse, Seq2SeqTask, Sort

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "Addition", "CharLMTask", "Dates", "PyStdlib", "Reverse", "Seq2SeqTask",
           "Sort", "TextFile", "TinyShakespeare", "stdlib_files"]
