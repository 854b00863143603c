"""The model registry: every architecture of every package joins the zoo here.

    @register_model("vit", family="transformer", kinds=("classification",), presets=VIT_PRESETS)
    def vit(spec, *, dim, depth, num_heads, ...) -> nn.Module: ...

    model = create_model("vit", spec, size="tiny", depth=2)
    list_models("vi*")  # ['vit']

A registered factory takes the task's ``spec`` (a dict: ``kind`` plus what the kind needs, e.g.
``input_shape`` and ``num_classes`` for classification) and the model's configuration as keyword
arguments, and returns an ``nn.Module``. The registry finishes that configuration: an entry
registered with ``presets`` (size -> config) is called as ``factory(spec, **config)`` with the size's
preset updated by the keyword overrides (an override that is not a preset key is a RegistryError);
an entry without presets is called as ``factory(spec, **overrides)``.

One kind can come in several input *modalities* (``classification`` of images and of audio
features): an entry may list the ``modalities`` it reads (see ``MODALITIES``); one that lists none
reads any. A task's spec names its modality under ``"modality"``.

What only the model knows, the entry declares for the harness: ``extra_flops`` (work that
``torch.utils.flop_counter.FlopCounterMode`` does not see, e.g. LSTM recurrences) and ``reference``
(the implementation ``python -m harness bench`` times it against, see ``zoo.reference``).

Models outside this repository join in two ways without editing it: import a module that registers
them (``python -m harness run vision --plugin my_models``), or declare an entry point in the group
``attention_zoo.models`` of an installed distribution; those are loaded on first use of the registry.

Options: every config key of the presets has a type and a range (``zoo.options``: integer keys >= 1
unless declared otherwise, ``bounds=`` and ``choices=`` for the rest), and ``config`` refuses a bad
override in one line (``model 'vit': depth must be an integer >= 1, got 0``) before anything is built.

Matched sizes (``--params 250k``, ``zoo.sizing``): an entry that declares its width knob
(``width="dim"``, ``width_multiple="num_heads"``, ``width_scales=("mlp_dim",)``) can be refitted to a
parameter budget.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from torch import nn

from .options import Option, Range, declare

SIZES = ("tiny", "small", "base")
MODALITIES = ("image", "audio", "text", "state")
TRAINING_DEFAULTS = ("lr", "weight_decay", "warmup_frac", "grad_clip", "schedule")  # what a Recipe sets
ENTRY_POINT_GROUP = "attention_zoo.models"

# extra_flops(model) -> a context manager that hooks the model and yields a zero-argument callable
# returning the forward FLOPs it has counted so far (hooks removed on exit)
ExtraFlops = Callable[[nn.Module], AbstractContextManager[Callable[[], int]]]


class RegistryError(ValueError):
    """A name that is not registered, registered twice, or not usable as asked."""


def unknown_name_error(what: str, name: str, known: list[str]) -> RegistryError:
    """'unknown model 'vti'; did you mean: vit? (known: cnn, vit)'."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return RegistryError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})")


@dataclass(frozen=True)
class WidthFit:
    """How ``zoo.sizing.fit_to_params`` resizes a model: the config ``key`` it searches over (an
    integer width), the ``multiple`` that width must be of (ints and names of config keys, e.g.
    ``"num_heads"``, whose values in the resolved config count; the width is a multiple of their least
    common multiple), and the config keys that ``scales`` with it, keeping their ratio to the width in
    the size's preset (e.g. ``mlp_dim``; a key that is None there, i.e. derived by the model, or that
    the user overrides, is left alone)."""

    key: str
    multiple: tuple[int | str, ...] = (1,)
    scales: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sizes:
    """A model's size presets (size -> the config its factory is called with) and, for ``--params``
    (``zoo.sizing.fit_to_params``), its width knob: the integer config key ``width`` to fit, what it
    must be a ``multiple`` of (ints and config keys such as ``"num_heads"``) and the keys that ``scale``
    with it (keeping their ratio to the width in the size's preset, e.g. ``("mlp_dim",)``)."""

    presets: dict[str, dict[str, Any]] | None
    width: str | None = None
    multiple: int | str | tuple[int | str, ...] = 1
    scales: tuple[str, ...] = ()


UNSET: Any = object()  # a training default a recipe leaves to the harness (the task's warm-up, a clip of 1.0)


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults, which the harness uses unless a run sets them for every model:
    ``lr`` and ``weight_decay``, and where the model needs its own, ``warmup_frac``, ``grad_clip``
    (None: no clipping) and ``schedule``; ``per_size`` maps a size to defaults of its own (a paper's
    recipe for its size)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: Any = UNSET
    grad_clip: Any = UNSET
    schedule: Any = UNSET  # 'warmup_cosine' (the harness's) or 'warmup_constant' (harness.trainer.lr_factor)
    per_size: dict[str, dict[str, Any]] = field(default_factory=dict)

    def defaults(self, size: str | None = None) -> dict[str, Any]:
        """The defaults this recipe sets (at ``size``, with its own where it has them)."""
        own = {k: getattr(self, k) for k in TRAINING_DEFAULTS if getattr(self, k) is not UNSET}
        return {**own, **(self.per_size.get(size, {}) if size else {})}


@dataclass(frozen=True)
class Rules:
    """What config keys accept beyond their preset's type (``zoo.options``): ``bounds`` (a key -> a
    ``Range`` or a half-open ``(min, max)`` pair) and ``choices`` (a key -> the values it takes)."""

    bounds: dict[str, Range | tuple] = field(default_factory=dict)
    choices: dict[str, tuple] = field(default_factory=dict)


@dataclass(frozen=True)
class Bench:
    """What only the model knows about measuring it: ``reference(device)``, the implementation
    ``python -m harness bench`` times it against (``zoo.reference``), and ``extra_flops``, the FLOPs
    that ``torch.utils.flop_counter`` does not see (see ``ExtraFlops``, e.g. LSTM recurrences)."""

    reference: Callable[..., Any] | None = None
    extra_flops: ExtraFlops | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its identity (name, factory, family, the task kinds and inputs it serves)
    and its declared objects: sizes (presets and width fitting), recipe (training defaults), options
    (each config key's type and range) and bench (reference and FLOP correction)."""

    name: str
    factory: Callable[..., nn.Module]
    family: str  # any string: 'transformer', 'ssm', 'baseline', or a plugin's own
    kinds: tuple[str, ...]
    modalities: tuple[str, ...] | None = None  # the inputs it reads; None: any
    description: str = ""
    sizes: Sizes | None = None
    recipe: Recipe = field(default_factory=Recipe)
    options: dict[str, Option] = field(default_factory=dict)  # config key -> its type and range (zoo.options)
    bench: Bench = field(default_factory=Bench)
    fit: WidthFit | None = None  # ``sizes``' width knob, checked (None: cannot be fitted)

    @property
    def presets(self) -> dict[str, dict[str, Any]] | None:
        return self.sizes.presets if self.sizes else None

    @property
    def defaults(self) -> dict[str, Any]:
        """The recipe's training defaults (without the per-size ones)."""
        return self.recipe.defaults()

    @property
    def reference(self) -> Callable[..., Any] | None:
        return self.bench.reference

    @property
    def extra_flops(self) -> ExtraFlops | None:
        return self.bench.extra_flops

    def supports(self, kind: str, modality: str | None = None) -> bool:
        """Serves tasks of ``kind`` whose inputs are ``modality`` (None: not checked)."""
        return kind in self.kinds and (modality is None or self.modalities is None or modality in self.modalities)

    def serves(self) -> str:
        """'classification[image]' or 'seq2seq': what ``list models`` and errors show."""
        kinds = ",".join(self.kinds)
        return f"{kinds}[{','.join(self.modalities)}]" if self.modalities else kinds

    def check(self, spec: dict[str, Any], size: str) -> None:
        """RegistryError unless the model serves ``spec``'s kind and modality and ``size`` is a size."""
        kind, modality = spec.get("kind"), spec.get("modality")
        if kind is not None and not self.supports(kind, modality):
            what = f"{kind!r} tasks on {modality!r} inputs" if self.supports(kind) else repr(kind)
            raise RegistryError(f"model {self.name!r} serves {self.serves()} tasks, not {what}")
        if size not in SIZES:
            raise RegistryError(f"unknown size {size!r}; accepted: {', '.join(SIZES)}")

    def config(self, size: str = "tiny", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The keyword arguments of the factory: the size's preset updated by ``overrides``, or the
        overrides alone for an entry without presets. RegistryError, in one line, for an override that
        is not a config key or whose value its option refuses (see ``zoo.options``); accepted values
        come as the model takes them (``dim=64.0`` as 64)."""
        overrides = dict(overrides or {})
        if self.presets is None:
            return overrides
        if size not in self.presets:
            raise RegistryError(f"model {self.name!r} has no {size!r} preset; it has {', '.join(self.presets)}")
        config = dict(self.presets[size])
        unknown = set(overrides) - set(config)
        if unknown:
            raise RegistryError(f"unknown config key(s) {', '.join(sorted(unknown))}; accepted: {', '.join(config)}")
        for key, value in overrides.items():
            option = self.options.get(key)
            try:
                config[key] = option.check(key, value) if option is not None else value
            except ValueError as e:
                raise RegistryError(f"model {self.name!r}: {e}") from None
        return config

    def training_defaults(self, size: str = "tiny") -> dict[str, Any]:
        """The training defaults at ``size``: the recipe's (``lr``, ``weight_decay``, and where it has
        its own, ``warmup_frac`` and ``grad_clip``), updated by the size's own (``Recipe.per_size``)."""
        return self.recipe.defaults(size)

    def create(self, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> nn.Module:
        """Build the model for a task's ``spec`` at ``size``, with config ``overrides``."""
        self.check(spec, size)
        return self.factory(spec, **self.config(size, overrides))


_MODELS: dict[str, ModelEntry] = {}
_plugins_loaded = False


def register_model(name: str | None = None, *, family: str, kinds: str | tuple[str, ...] | list[str],
                   modalities: str | tuple[str, ...] | list[str] | None = None, description: str | None = None,
                   sizes: Sizes | None = None, recipe: Recipe | None = None, rules: Rules | None = None,
                   bench: Bench | None = None, **legacy: Any) -> Callable:
    """Decorator: register a model factory (or class) under ``name`` (default: its ``__name__``).

    Its identity: ``family`` (any string: 'transformer', 'ssm', 'baseline', a plugin's own; verdicts
    compare every pair of families present), the task ``kinds`` it serves and the ``modalities`` it reads
    (None: any). What it declares besides, each a small object: ``sizes`` (:class:`Sizes`: the presets
    the registry resolves before calling the factory, and the width ``--params`` may refit),
    ``recipe`` (:class:`Recipe`: training defaults), ``rules`` (:class:`Rules`: bounds and choices of
    config keys) and ``bench`` (:class:`Bench`: the reference implementation and FLOP correction).

    Each config key of the presets is an option whose type is its preset value's (int, float, bool,
    str, tuple; None: derived by the model) and whose values ``config`` checks before the factory runs
    (``zoo.options``): integer keys are >= 1 and floats finite unless ``rules`` says otherwise (a
    dropout: ``zoo.options.DROPOUT``, [0, 1)). Every preset must pass its own declaration.

    The keywords of earlier versions (``presets``, ``width``, ``width_multiple``, ``width_scales``,
    ``lr``, ``weight_decay``, ``warmup_frac``, ``grad_clip``, ``size_defaults``, ``bounds``,
    ``choices``, ``reference``, ``extra_flops``) are still accepted, each into its object.
    """
    sizes, recipe, rules, bench = _declared(name, sizes, recipe, rules, bench, legacy)
    family, (kinds, modalities) = _family(family), _serves(kinds, modalities)
    presets = sizes.presets if sizes else None
    options = _options(name, presets, rules.bounds, rules.choices)
    fit = _width_fit(name, presets, sizes.width, sizes.multiple, sizes.scales) if sizes else None

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        doc = description if description is not None else (factory.__doc__ or "").strip().split("\n")[0]
        _add(ModelEntry(key, factory, family, kinds, modalities, doc, sizes, recipe, options, bench, fit),
             factory.__module__)
        return factory

    return decorate


def register_variant(name: str, like: str, *, family: str | None = None, description: str | None = None,
                     config: dict[str, Any] | None = None, presets: dict[str, dict[str, Any]] | None = None,
                     recipe: Recipe | None = None, factory: Callable[..., nn.Module] | None = None) -> ModelEntry:
    """Register ``name`` as a variant of the registered model ``like``: the same factory, identity and
    declarations, with what is given changed: its ``family``, ``description``, ``config`` (overrides of
    every size's preset) and ``presets`` (overrides of one size's: size -> overrides), both checked as
    ``--model-opt`` values are, ``recipe`` or ``factory``."""
    base = get_model_entry(like)
    sizes = base.sizes
    if config or presets:
        if sizes is None or sizes.presets is None:
            raise RegistryError(f"variant {name!r}: model {like!r} has no presets to change")
        changed = {s: {**(config or {}), **(presets or {}).get(s, {})} for s in sizes.presets}
        for size, overrides in changed.items():
            base.config(size, overrides)  # a bad key or value: a RegistryError naming the base
        sizes = replace(sizes, presets={s: {**p, **changed[s]} for s, p in sizes.presets.items()})
    entry = replace(base, name=name, factory=factory or base.factory, family=_family(family or base.family),
                    description=description if description is not None else f"{base.description} (variant of {like})",
                    sizes=sizes, recipe=recipe or base.recipe)
    _add(entry, (factory or base.factory).__module__)
    return entry


def _add(entry: ModelEntry, module: str) -> None:
    if entry.name in _MODELS:
        raise RegistryError(f"{module} registers model {entry.name!r}, which is already registered (by "
                            f"{_MODELS[entry.name].factory.__module__}); give it another name")
    _MODELS[entry.name] = entry


def _family(family: Any) -> str:
    if not isinstance(family, str) or not family.strip():
        raise RegistryError(f"family must be a non-empty string, got {family!r}")
    return family


def _serves(kinds: Any, modalities: Any) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)  # one kind may be given as a plain string
    modalities = (modalities,) if isinstance(modalities, str) else modalities
    bad = sorted(set(modalities or ()) - set(MODALITIES))
    if bad:
        raise RegistryError(f"unknown modality {', '.join(bad)}; accepted: {', '.join(MODALITIES)}")
    return kinds, tuple(modalities) if modalities else None


LEGACY = {"presets": "sizes", "width": "sizes", "width_multiple": "sizes", "width_scales": "sizes",
          "size_defaults": "recipe", "bounds": "rules", "choices": "rules", "reference": "bench",
          "extra_flops": "bench", **{k: "recipe" for k in TRAINING_DEFAULTS}}


def _declared(name: str | None, sizes: Sizes | None, recipe: Recipe | None, rules: Rules | None,
              bench: Bench | None, legacy: dict[str, Any]) -> tuple[Sizes | None, Recipe, Rules, Bench]:
    """The declared objects, from the new keywords or the earlier ones (not both for one object)."""
    unknown = sorted(set(legacy) - set(LEGACY))
    if unknown:
        raise RegistryError(f"unknown training default(s) {', '.join(unknown)}; accepted: {', '.join(TRAINING_DEFAULTS)}")
    given = {"sizes": sizes, "recipe": recipe, "rules": rules, "bench": bench}
    clash = sorted({LEGACY[k] for k in legacy if given[LEGACY[k]] is not None})
    if clash:
        raise RegistryError(f"model {name!r}: give {', '.join(clash)} as one object or as the earlier keywords, "
                            f"not both")
    per_size = legacy.get("size_defaults") or {}
    bad = sorted({k for d in per_size.values() for k in d} - set(TRAINING_DEFAULTS))
    if bad:
        raise RegistryError(f"unknown training default(s) {', '.join(bad)}; accepted: {', '.join(TRAINING_DEFAULTS)}")
    if set(per_size) - set(SIZES):
        raise RegistryError(f"size_defaults for unknown size(s) {', '.join(sorted(set(per_size) - set(SIZES)))}; "
                            f"accepted: {', '.join(SIZES)}")
    if sizes is None and any(k in legacy for k in ("presets", "width", "width_multiple", "width_scales")):
        scales = legacy.get("width_scales", ())
        sizes = Sizes(legacy.get("presets"), legacy.get("width"), legacy.get("width_multiple", 1),
                      (scales,) if isinstance(scales, str) else tuple(scales))
    recipe = recipe or Recipe(**{k: legacy.get(k, UNSET) for k in TRAINING_DEFAULTS}, per_size=dict(per_size))
    return (sizes, recipe, rules or Rules(legacy.get("bounds") or {}, legacy.get("choices") or {}),
            bench or Bench(legacy.get("reference"), legacy.get("extra_flops")))


def _options(name: str | None, presets: dict[str, dict[str, Any]] | None, bounds: dict[str, Range | tuple] | None,
             choices: dict[str, tuple] | None) -> dict[str, Option]:
    """The options of the presets' config keys (none without presets), checked against the presets."""
    who = f"model {name!r}" if name else "register_model"
    if presets is None:
        if bounds or choices:
            raise RegistryError(f"{who}: bounds and choices need presets= (the config keys and their types "
                                f"are the presets')")
        return {}
    try:
        return declare(presets, bounds, choices)
    except ValueError as e:
        raise RegistryError(f"{who}: {e}") from None


def _width_fit(name: str | None, presets: dict[str, dict[str, Any]] | None, width: str | None,
               multiple: int | str | tuple[int | str, ...], scales: tuple[str, ...] | list[str]) -> WidthFit | None:
    """Check the width declaration of ``register_model`` against the presets."""
    who = f"model {name!r}" if name else "register_model"
    multiple = multiple if isinstance(multiple, (tuple, list)) else (multiple,)
    scales = (scales,) if isinstance(scales, str) else tuple(scales)
    if width is None:
        if multiple != (1,) or scales:
            raise RegistryError(f"{who}: width_multiple and width_scales need width= (the config key to fit)")
        return None
    for m in multiple:
        if isinstance(m, bool) or not (isinstance(m, str) or (isinstance(m, int) and m >= 1)):
            raise RegistryError(f"{who}: width_multiple takes positive ints and config key names, got {m!r}")
    if presets is None and (scales or any(isinstance(m, str) for m in multiple)):
        raise RegistryError(f"{who}: width_scales and config keys in width_multiple need presets= "
                            f"(their values are the presets')")
    for size, config in (presets or {}).items():
        needed = [width, *scales, *(m for m in multiple if isinstance(m, str))]
        missing = [k for k in needed if k not in config]
        if missing:
            raise RegistryError(f"{who}: preset {size!r} has no config key {', '.join(missing)} "
                                f"(declared in width / width_multiple / width_scales)")
        if not isinstance(config[width], int) or isinstance(config[width], bool):
            raise RegistryError(f"{who}: width {width!r} must be an int in every preset, "
                                f"got {config[width]!r} in {size!r}")
    return WidthFit(width, tuple(multiple), scales)


def load_plugins() -> None:
    """Import every module declared in the ``attention_zoo.models`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as e:  # an installed plugin that breaks is named, in one line
            raise RegistryError(f"plugin entry point {ep.name!r} ({ep.value}) failed to import: "
                                f"{' '.join(f'{type(e).__name__}: {e}'.split())}") from None


def load_plugin(module: str) -> None:
    """Import ``module`` so that its ``@register_model`` decorators run."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise RegistryError(f"plugin module {module!r} not found on the Python path") from None
        raise


def get_model_entry(name: str) -> ModelEntry:
    load_plugins()
    if name not in _MODELS:
        raise unknown_name_error("model", name, list(_MODELS))
    return _MODELS[name]


def list_models(pattern: str = "*", *, kind: str | None = None, family: str | None = None,
                modality: str | None = None) -> list[str]:
    """Sorted names matching the wildcard ``pattern`` (and serving ``kind`` on ``modality``, of ``family``)."""
    load_plugins()
    return sorted(n for n, e in _MODELS.items() if fnmatch.fnmatchcase(n, pattern)
                  and (kind is None or e.supports(kind, modality)) and (family is None or e.family == family))


def create_model(name: str, spec: dict[str, Any], size: str = "tiny", **overrides: Any) -> nn.Module:
    """Build model ``name`` for a task's ``spec`` at ``size``, with config ``overrides``."""
    return get_model_entry(name).create(spec, size, **overrides)
