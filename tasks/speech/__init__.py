"""Speech: keyword spotting (kind ``classification``) and digit-string recognition (kind
``transcription``) on log-mel features; all of modality ``audio``.

- ``features``: audio files in, log-mel features out, their normalisation, SpecAugment.
- ``classification`` / ``transcription``: the bases of the two kinds of speech task.
- ``tasks``: ``synth_commands`` and ``synth_digits`` (offline, default), spoken by espeak-ng through
  ``synth``, tested on voices never heard in training.
- ``datasets``: ``speech_commands`` (Google Speech Commands v2) and ``audio_folder`` (your own wav folders).
"""

# the offline tasks register before the downloaded ones: the registry's order stays what it was
from .tasks import SynthCommands, SynthDigits, split_by_voice, validation_voices  # isort: skip
from .datasets import AudioFolder, SpeechCommands  # isort: skip
from .classification import AudioClassificationTask, Clip
from .features import SAMPLE_RATE, LogMel, SpecAugment, fit_length, log_mel_features, normalise, read_wav
from .transcription import TranscriptionTask

__all__ = ["SAMPLE_RATE", "AudioClassificationTask", "AudioFolder", "Clip", "LogMel", "SpecAugment", "SpeechCommands",
           "SynthCommands", "SynthDigits", "TranscriptionTask", "fit_length", "log_mel_features", "normalise",
           "read_wav", "split_by_voice", "validation_voices"]
