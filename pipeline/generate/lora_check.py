"""Will a LoRA fit the model? Answered before any shot is planned, with no weights loaded.

The adapter's tensor names and shapes come from its safetensors header (a small read; the
tensors themselves stay on disk as meta tensors). diffusers' own converters turn them into the
names the loader would use (kohya sd-scripts, the old attention-processor format and peft all
end as peft ``<module>.lora_A/B.weight``), and each is looked up among the target model's
modules, built on the meta device from its configs (no weights, no GPU). The report names the
format, the family the adapter was made for, matched and unmatched tensors and shapes that do
not fit; ``problem`` is the one line that refuses it. Results are cached by the adapter's
sha256 and the model's configs, since a brand is checked on every ``plan``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.files import InputFileError, atomic_write_bytes, read_text_capped
from pipeline.weights import safetensors_header

if TYPE_CHECKING:
    from collections.abc import Collection

    from pipeline.brand.config import BrandConfig
    from pipeline.settings import Settings

CHECK_CACHE_NAME = "lora_checks.json"
MAX_CHECK_CACHE_BYTES = 16 << 20
CHECK_VERSION = 1  # bump when the rules below change, so cached verdicts are recomputed
FAMILIES = ("sd15", "sd2", "sdxl")
# A LyCORIS file's tensor suffixes (LoHa: Hadamard products; LoKr: Kronecker products).
LYCORIS = {"hada_w1_a": "LyCORIS LoHa", "lokr_w1": "LyCORIS LoKr", "lokr_w2": "LyCORIS LoKr"}
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_LORA_SUFFIX = re.compile(r"\.(lora_A|lora_B)(\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class TargetModel:
    """What a LoRA is matched against: each component's weight shapes by module name."""

    family: str  # sd15, sd2, sdxl
    pipeline: str  # the diffusers pipeline class name (its converters are used)
    modules: dict[str, dict[str, tuple[int, ...]]]
    unet_config: Any
    key: str  # digest of the configs the modules were built from


@dataclass
class LoraReport:
    """One adapter against one model."""

    file: str
    format: str = "unknown"
    family: str = "unknown"  # what the adapter was made for, read from its tensors
    model_family: str = ""
    total: int = 0  # LoRA tensors (lora_A / lora_B) after conversion
    matched: int = 0
    unmatched: int = 0  # tensors naming no module of the model
    mismatched: int = 0  # tensors whose shape does not fit their module's weight
    examples: dict[str, str] = field(default_factory=dict)  # the first of each, for messages
    problem: str | None = None  # why it is refused (partial matches: see ``refusal``)

    @property
    def partial(self) -> bool:
        return 0 < self.matched < self.total

    def refusal(self, allow_partial: bool) -> str | None:
        """The one line that refuses this adapter, or None when it may be used."""
        if self.problem:
            return self.problem
        if self.partial and not allow_partial:
            first = self.examples.get("unmatched", "?")
            return (
                f"{self.file}: only {self.matched} of {self.total} LoRA tensors match the model "
                f"(first unmatched: {first}); set allow_partial: true on the adapter to apply "
                "the rest anyway"
            )
        return None

    def summary(self) -> str:
        return (
            f"{self.format}, family {self.family}, {self.matched}/{self.total} tensors matched"
            + (f", {self.mismatched} shape mismatches" if self.mismatched else "")
        )


# --- the target model -----------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_capped(path, 1 << 20, "model config"))
    except (OSError, ValueError, InputFileError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: config is not a JSON object")
    return data


def _shapes(module: Any) -> dict[str, tuple[int, ...]]:
    import torch

    out: dict[str, tuple[int, ...]] = {}
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d):
            out[name] = tuple(mod.weight.shape)
    return out


def model_family(pipeline: str, unet_config: Any, has_text_encoder_2: bool) -> str:
    """SD-shaped models by structure: two text encoders are SDXL, a 1024-wide cross
    attention SD2.x, everything else SD1.5-shaped (the tiny preset is SD1.5 scaled down)."""
    if has_text_encoder_2 or "XL" in pipeline:
        return "sdxl"
    cross = unet_config.get("cross_attention_dim") if isinstance(unet_config, dict) else None
    return "sd2" if cross == 1024 else "sd15"


@functools.lru_cache(maxsize=8)
def _build_target(folder: str, key: str) -> TargetModel:
    import torch
    import transformers
    from diffusers import UNet2DConditionModel

    root = Path(folder)
    index = _read_json(root / "model_index.json")
    unet_cfg = _read_json(root / "unet" / "config.json")
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        modules["unet"] = _shapes(unet)
        for comp in ("text_encoder", "text_encoder_2"):
            cfg_path = root / comp / "config.json"
            if not cfg_path.is_file() or not index.get(comp) or index[comp][0] is None:
                continue
            cfg = _read_json(cfg_path)
            arch = (cfg.get("architectures") or [index[comp][1]])[0]
            model_cls = getattr(transformers, str(arch))
            modules[comp] = _shapes(model_cls(model_cls.config_class(**cfg)))
    pipeline = str(index.get("_class_name", ""))
    family = model_family(pipeline, unet_cfg, "text_encoder_2" in modules)
    return TargetModel(family, pipeline, modules, unet.config, key)


def target_key(folder: Path) -> str:
    """A digest of the configs a target is built from (cheap: no model is built)."""
    h = hashlib.sha256()
    for name in ("model_index.json", "unet/config.json", *_te_configs()):
        p = folder / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\n")
    return h.hexdigest()


def target_from_folder(folder: Path) -> TargetModel:
    """The target built from a diffusers folder's configs (weights are never read)."""
    return _build_target(str(folder.resolve()), target_key(folder))


def folder_family(folder: Path) -> str:
    """The model family of a diffusers folder, from its configs alone."""
    index = _read_json(folder / "model_index.json")
    te2 = index.get("text_encoder_2")
    has_te2 = isinstance(te2, list) and te2[0] is not None
    unet_cfg = _read_json(folder / "unet" / "config.json")
    return model_family(str(index.get("_class_name", "")), unet_cfg, has_te2)


def _te_configs() -> list[str]:
    return [f"{c}/config.json" for c in ("text_encoder", "text_encoder_2")]


# --- the adapter ------------------------------------------------------------------------


def lora_format(keys: list[str]) -> str:
    """kohya, peft, diffusers-legacy or LyCORIS (LoHa/LoKr), read from the tensor names."""
    for suffix, name in LYCORIS.items():
        if any(f".{suffix}" in k for k in keys):
            return name
    if keys and all(
        k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys
    ):
        return "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft"
    if any(".lora.down." in k or "_lora.down." in k or ".processor." in k for k in keys):
        return "diffusers-legacy"
    return "unknown"


def _adapter_family(keys: list[str], peft: dict[str, tuple[int, ...]]) -> str:
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys) or any(
        k.startswith("text_encoder_2.") for k in peft
    ):
        return "sdxl"
    for key, shape in peft.items():  # the cross attention's input width tells the family
        if key.startswith("unet.") and ".attn2.to_k.lora_A" in key and len(shape) == 2:
            return {768: "sd15", 1024: "sd2", 2048: "sdxl"}.get(shape[1], "unknown")
    return "unknown"


def _meta_state(path: Path) -> dict[str, Any]:
    """The file's tensors as meta tensors of the right shape, scalars (kohya's alphas) read
    for real: the converters need their values, and they are a few bytes each."""
    import torch
    from safetensors import safe_open

    header = safetensors_header(path, "LoRA")
    state: dict[str, Any] = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for name, entry in header.items():
            shape = entry["shape"]
            if len(shape) <= 1 and (not shape or shape[0] <= 1):
                state[name] = fh.get_tensor(name)
            else:
                state[name] = torch.empty(shape, device="meta")
    return state


def _to_peft(state: dict[str, Any], target: TargetModel) -> dict[str, tuple[int, ...]]:
    """The adapter's tensors under the names diffusers' loader would give them."""
    import diffusers
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    pipe_cls = getattr(diffusers, target.pipeline, None)
    if pipe_cls is None or not hasattr(pipe_cls, "lora_state_dict"):
        pipe_cls = diffusers.StableDiffusionPipeline
    converted = pipe_cls.lora_state_dict(dict(state), unet_config=target.unet_config)[0]
    out: dict[str, tuple[int, ...]] = {}
    for comp in _COMPONENTS:
        part = {k[len(comp) + 1 :]: v for k, v in converted.items() if k.startswith(f"{comp}.")}
        if not part:
            continue
        if comp == "unet":
            if not any("lora_A" in k for k in part):
                part = convert_unet_state_dict_to_peft(part)
        else:
            with contextlib.suppress(ValueError):  # already peft: nothing to infer
                part = convert_state_dict_to_diffusers(part)
            part = convert_state_dict_to_peft(part)
        out.update({f"{comp}.{k}": tuple(v.shape) for k, v in part.items()})
    # Tensors no converter claimed keep their names: they count as unmatched.
    claimed = {k.split(".", 1)[0] for k in converted}
    for k, v in converted.items():
        if k.split(".", 1)[0] not in _COMPONENTS and claimed:
            out[k] = tuple(v.shape)
    return out


def _match(peft: dict[str, tuple[int, ...]], target: TargetModel, report: LoraReport) -> None:
    for key, shape in sorted(peft.items()):
        m = _LORA_SUFFIX.search(key)
        if m is None:
            continue  # alphas, DoRA magnitudes: not counted
        report.total += 1
        comp, _, module = key[: m.start()].partition(".")
        table = target.modules.get(comp, {})
        if module not in table and module.removeprefix("text_model.") in table:
            module = module.removeprefix("text_model.")  # transformers 5 flattened CLIP
        weight = table.get(module)
        if weight is None:
            report.unmatched += 1
            report.examples.setdefault("unmatched", key)
            continue
        if m.group(1) == "lora_A":
            fits = len(shape) >= 2 and shape[1] == weight[1]
        else:
            fits = len(shape) >= 1 and shape[0] == weight[0]
        if not fits:
            report.mismatched += 1
            report.examples.setdefault(
                "mismatched", f"{key} {list(shape)} vs weight {list(weight)}"
            )
            continue
        report.matched += 1


def inspect_lora(path: Path, target: TargetModel) -> LoraReport:
    """Match the adapter at ``path`` against ``target`` (``problem`` set when it cannot be
    used at all; a partial match is decided by the caller's ``allow_partial``)."""
    report = LoraReport(file=str(path), model_family=target.family)
    try:
        state = _meta_state(path)
    except InputFileError as exc:
        report.problem = str(exc)  # names the file
        return report
    except OSError as exc:
        report.problem = f"{path}: cannot read ({exc})"
        return report
    keys = list(state)
    report.format = lora_format(keys)
    if report.format.startswith("LyCORIS"):
        report.problem = (
            f"{path}: {report.format} adapters are not supported (only plain LoRA: kohya, "
            "peft, diffusers); convert it to a LoRA first"
        )
        return report
    # The family from the names first: another family's names may not even convert.
    report.family = _adapter_family(keys, {})
    if report.family == "unknown" or report.family == target.family:
        try:
            peft = _to_peft(state, target)
        except Exception as exc:  # diffusers' converters raise anything from KeyError on
            report.problem = (
                f"{path}: cannot convert its tensor names ({type(exc).__name__}: {exc})"
            )
            return report
        if report.family == "unknown":
            report.family = _adapter_family(keys, peft)
        _match(peft, target, report)
    report.problem = _problem(path, report, keys)
    return report


def _problem(path: Path, report: LoraReport, keys: list[str]) -> str | None:
    if report.family != "unknown" and report.family != report.model_family:
        return (
            f"{path}: {report.format} LoRA made for {report.family}, "
            f"the model is {report.model_family}: family mismatch"
        )
    if report.mismatched:
        return (
            f"{path}: {report.mismatched} of {report.total} LoRA tensors do not fit "
            f"the model's shapes (first: {report.examples['mismatched']})"
        )
    if report.matched == 0:
        first = keys[0] if keys else "none"
        return (
            f"{path}: no LoRA tensor matches a module of the model ({report.format}, "
            f"{len(keys)} tensors, first key {first!r}: wrong prefix or another model?)"
        )
    return None


# --- cached by sha256 ---------------------------------------------------------------


def check_lora_cached(path: Path, sha256: str, folder: Path, cache_dir: Path) -> LoraReport:
    """``inspect_lora`` against the model whose configs are in ``folder``, cached in
    ``cache_dir`` by the adapter's sha256 and the configs' digest (a hit builds nothing)."""
    cache_file = cache_dir / CHECK_CACHE_NAME
    key = f"{CHECK_VERSION}:{sha256}:{target_key(folder)}"
    entries: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, InputFileError):
        entries = json.loads(read_text_capped(cache_file, MAX_CHECK_CACHE_BYTES, "LoRA checks"))
    hit = entries.get(key) if isinstance(entries, dict) else None
    if isinstance(hit, dict):
        with contextlib.suppress(TypeError):
            cached = LoraReport(**hit)
            cached.file = str(path)  # messages name the file as the brand does now
            if cached.problem:
                cached.problem = _rename(cached.problem, hit["file"], str(path))
            return cached
    report = inspect_lora(path, target_from_folder(folder))
    entries[key] = asdict(report)
    with contextlib.suppress(OSError):  # a read-only cache costs only a re-check
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_file, json.dumps(entries, sort_keys=True).encode())
    return report


def _rename(text: str, old: str, new: str) -> str:
    return new + text[len(old) :] if text.startswith(old) else text


# --- a brand's adapters -------------------------------------------------------------


@dataclass(frozen=True)
class AdapterCheck:
    """One brand adapter against the model: its report, and the line refusing it (if any)."""

    index: int  # position in the brand's ``loras`` list (for ``loras[i].path`` locations)
    name: str
    report: LoraReport | None  # None: not inspected (missing file, no model configs here)
    refusal: str | None


def normalize_family(text: str | None) -> str | None:
    """A brand's ``base_family`` in our names (sd15, sd2, sdxl), or None if not one of them."""
    flat = re.sub(r"[^a-z0-9]", "", (text or "").lower())
    if flat.startswith("sdxl"):
        return "sdxl"
    if flat.startswith(("sd2", "stablediffusion2")):
        return "sd2"
    if flat.startswith(("sd1", "stablediffusion1")):
        return "sd15"
    return None


def check_brand_loras(
    cfg: BrandConfig, model_id: str, settings: Settings, names: Collection[str] | None = None
) -> list[AdapterCheck]:
    """Each of the brand's local adapters (``names``: only those) against ``model_id``.

    A missing file is refused; so is a declared ``base_family`` other than the model's, and
    whatever ``LoraReport.refusal`` refuses. When this host has no configs for the model (a
    repo id not in its cache) the adapters' files are still checked, their tensors are not.
    Raises ``ModelLoadError`` for a model string that cannot name a model."""
    from pipeline.generate.modelspec import ModelLoadError, cached_sha256, config_folder

    folder = config_folder(model_id, settings) if cfg.loras else None
    try:
        family = folder_family(folder) if folder is not None else None
    except ValueError as exc:  # a folder whose configs do not read: the model cannot load
        raise ModelLoadError(f"{model_id}: {exc}") from None
    out: list[AdapterCheck] = []
    for i, spec in enumerate(cfg.loras):
        if names is not None and spec.name not in names:
            continue
        path, refusal = _local_copy(cfg.resolve_uri(spec.path), spec.sha256, spec.name, settings)
        declared = normalize_family(spec.base_family)
        report: LoraReport | None = None
        if refusal is None and not path.is_file():
            refusal = f"{path}: LoRA file not found"
        elif refusal is None and declared and family and declared != family:
            refusal = f"{path}: base_family {spec.base_family} but the model is {family}"
        elif refusal is None and folder is not None:
            try:
                sha = cached_sha256(path, settings)
                report = check_lora_cached(path, sha, folder, Path(settings.model_cache_dir))
                refusal = report.refusal(spec.allow_partial)
            except (ValueError, OSError) as exc:  # the model's configs build no model
                refusal = f"{path}: cannot be checked against {model_id}: {exc}"
        out.append(AdapterCheck(i, spec.name, report, refusal))
    return out


def _local_copy(uri: str, sha256: str, name: str, settings: Settings) -> tuple[Path, str | None]:
    """The adapter's local file (a ``store://`` one fetched and verified), or why not."""
    from pipeline.generate.lora import LoraError, StoreAdapters, adapter_path, is_store_uri

    try:
        if is_store_uri(uri):
            return StoreAdapters(settings).path_for(uri, sha256, name), None
        return adapter_path(uri), None
    except LoraError as exc:
        return Path(uri), str(exc)
