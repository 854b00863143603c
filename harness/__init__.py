"""The comparison harness: ``python -m harness {run,list,report}``."""
