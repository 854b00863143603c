"""attention-zoo's transformer family, built on one attention core (``zoo.core``).

Importing ``zoo`` registers its models: ``zoo.create_model("vit", spec)``. Parameter counts and
matched sizes: ``zoo.count_params``, ``zoo.fit_to_params`` (``zoo.sizing``); bench references:
``zoo.reference.Reference``; the types and ranges of model options: ``zoo.options`` (``zoo.Range``).
"""

from . import transformer, vit  # noqa: F401  (register "transformer", "gpt", "vit")
from . import decision_transformer  # noqa: F401  (registers "decision_transformer")
from . import conformer  # noqa: F401  (registers "conformer")
from .options import Range
from .reference import Reference
from .registry import ModelEntry, RegistryError, create_model, get_model_entry, list_models, register_model
from .sizing import count_params, fit_to_params, parse_param_count

__all__ = ["ModelEntry", "Range", "Reference", "RegistryError", "count_params", "create_model", "fit_to_params",
           "get_model_entry", "list_models", "parse_param_count", "register_model"]
