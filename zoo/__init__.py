"""attention-zoo's transformer family, built on one attention core (``zoo.core``).

Importing ``zoo`` registers its models: ``zoo.create_model("vit", spec)``.
"""

from . import transformer, vit  # noqa: F401  (register "transformer", "gpt", "vit")
from . import decision_transformer  # noqa: F401  (registers "decision_transformer")
from . import conformer  # noqa: F401  (registers "conformer")
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
