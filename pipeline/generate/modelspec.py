"""Which model a string names, how to load it, and its weight digest for lineage.

A model string is one of:

- ``tiny``: the offline random-weight preset (``pipeline.generate.tiny_preset``);
- ``tiny-inpaint``: its 9-channel inpainting variant (a brand's ``inpaint_model``);
- a local diffusers folder (has ``model_index.json``);
- a single ``.safetensors`` checkpoint (loaded with ``from_single_file``);
- a diffusers repo id (``org/name``), resolved from the local Hugging Face cache only.

Only safetensors weights are ever read: pickle formats can run code when loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.digests import sha256_file
from pipeline.files import InputFileError, atomic_write_bytes, read_text_capped
from pipeline.generate.tiny_preset import ensure_tiny_model
from pipeline.settings import force_hub_offline
from pipeline.weights import check_safetensors

if TYPE_CHECKING:
    from pipeline.settings import Settings

PICKLE_SUFFIXES = frozenset({".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle"})
DIGEST_CACHE_NAME = "digests.json"
MAX_DIGEST_CACHE_BYTES = 64 << 20

ModelKind = Literal["tiny", "folder", "single_file", "repo"]


class ModelLoadError(ValueError):
    """A model string that cannot be loaded (unknown, missing, or not safetensors)."""


@dataclass(frozen=True)
class ModelSpec:
    model_id: str  # the string as written in the brand config / settings
    kind: ModelKind
    path: Path | None  # the folder or file on disk; None for a repo id before resolving

    @classmethod
    def parse(cls, model_id: str, settings: Settings) -> ModelSpec:
        text = model_id.strip()
        if not text:
            raise ModelLoadError("model: empty model name")
        if text == "tiny":
            return cls(text, "tiny", Path(settings.model_cache_dir) / "tiny-sd")
        if text == "tiny-inpaint":
            return cls(text, "tiny", Path(settings.model_cache_dir) / "tiny-sd-inpaint")
        path = Path(text).expanduser()
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"{text}: {suffix} is a pickle format, which can run code when loaded; "
                "only .safetensors weights are accepted (convert it first)"
            )
        if suffix == ".safetensors":
            if not path.is_file():
                raise ModelLoadError(f"{text}: checkpoint file not found")
            return cls(text, "single_file", path.resolve())
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(
                    f"{text}: folder has no model_index.json (not a diffusers model)"
                )
            return cls(text, "folder", path.resolve())
        if text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise ModelLoadError(f"{text}: no such model folder or file, and not a repo id")
        return cls(text, "repo", None)

    def local_path(self, settings: Settings) -> Path:
        """The folder or file holding the weights (building the tiny preset if needed)."""
        if self.kind == "tiny":
            inpaint = self.model_id == "tiny-inpaint"
            return ensure_tiny_model(Path(settings.model_cache_dir), inpaint=inpaint)
        if self.path is not None:
            return self.path
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.model_id, local_files_only=True))
        except Exception as exc:  # the hub raises several types for "not cached"
            raise ModelLoadError(
                f"{self.model_id}: not in the local Hugging Face cache and downloads are off "
                f"({type(exc).__name__})"
            ) from None


def check_model(model_id: str, settings: Settings) -> ModelSpec:
    """What ``plan`` checks before any shot pins ``model_id`` (``ModelLoadError`` if it fails):
    the string names a model kind we load, a single file is well-formed safetensors (its header,
    not its tensors), and a folder holds safetensors weights. A repo id is only checked when it
    is loaded, on the worker that has the cache."""
    spec = ModelSpec.parse(model_id, settings)
    if spec.kind == "single_file" and spec.path is not None:
        check_checkpoint(spec.path)
    elif spec.kind == "folder" and spec.path is not None:
        _refuse_pickle_only_folder(spec.path)
    return spec


def config_folder(model_id: str, settings: Settings) -> Path | None:
    """The diffusers folder holding ``model_id``'s configs (for checks that build the model
    on the meta device), or None when this host has none (a repo id not in its cache)."""
    spec = ModelSpec.parse(model_id, settings)
    if spec.kind == "single_file" and spec.path is not None:
        from pipeline.generate.singlefile import SingleFileError, config_folder_for

        try:
            return config_folder_for(spec.path, settings)
        except SingleFileError as exc:
            raise ModelLoadError(str(exc)) from None
    try:
        return spec.local_path(settings)
    except ModelLoadError:
        if spec.kind == "repo":
            return None
        raise


def _dtype_kwargs(torch_dtype: Any) -> dict[str, Any]:
    # diffusers 0.42 renamed ``torch_dtype`` to ``dtype``; older releases only know the former.
    import diffusers
    from packaging.version import Version

    key = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"
    return {key: torch_dtype} if torch_dtype is not None else {}


def load_pipeline(spec: ModelSpec, settings: Settings, torch_dtype: Any = None) -> Any:
    """Load a text-to-image diffusers pipeline for ``spec`` (weights stay on the CPU)."""
    from diffusers import AutoPipelineForText2Image

    force_hub_offline()  # whatever the environment says, before any loader runs
    path = spec.local_path(settings)
    if spec.kind == "single_file":
        return _load_single_file(path, settings, torch_dtype)
    _refuse_pickle_only_folder(path)
    for weights in weight_files(path):
        check_checkpoint(weights)
    try:
        return AutoPipelineForText2Image.from_pretrained(
            str(path), use_safetensors=True, local_files_only=True, **_dtype_kwargs(torch_dtype)
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{spec.model_id}: cannot load diffusers pipeline: {exc}") from None


def _refuse_pickle_only_folder(path: Path) -> None:
    weights = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES]
    safe = [p for p in path.rglob("*.safetensors")]
    if weights and not safe:
        raise ModelLoadError(
            f"{path}: holds only pickle weights ({weights[0].name}); "
            "only .safetensors weights are accepted"
        )


def check_checkpoint(path: Path) -> None:
    """Refuse a single-file checkpoint that is not well-formed safetensors (``ModelLoadError``)."""
    try:
        check_safetensors(path, "checkpoint")
    except InputFileError as exc:
        raise ModelLoadError(str(exc)) from None


def _load_single_file(path: Path, settings: Settings, torch_dtype: Any) -> Any:
    """A single-file checkpoint with its configs from disk (``SHOTLINE_MODEL_CONFIG`` or the
    shipped ones for its family): nothing is looked up on a hub, cached or not."""
    import diffusers

    from pipeline.generate.singlefile import SingleFileError, config_folder_for
    from pipeline.generate.singlefile import text2image_class_name as class_name

    check_checkpoint(path)  # before any loader maps it
    try:
        folder = config_folder_for(path, settings)
        cls_name = class_name(folder)
    except (SingleFileError, OSError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from None
    pipe_cls = getattr(diffusers, cls_name, None)
    if pipe_cls is None or not hasattr(pipe_cls, "from_single_file"):
        raise ModelLoadError(f"{path}: {folder} names pipeline {cls_name!r}, not a single-file one")
    try:
        pipe = pipe_cls.from_single_file(
            str(path), config=str(folder), local_files_only=True, **_dtype_kwargs(torch_dtype)
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot load as {cls_name} with the configs in {folder}: {exc}"
        ) from None
    _own_storage(pipe)
    return pipe


def _own_storage(pipe: Any) -> None:
    """Give every weight its own storage. The single-file converters leave tensors as views
    laid out as the checkpoint had them, and CPU kernels round differently on such layouts:
    the same weights gave other pixels than the folder's. Fresh copies (one tensor at a
    time) make an image depend on the weights only, so the file reproduces the folder."""
    import torch

    with torch.no_grad():
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in [*component.parameters(), *component.buffers()]:
                    tensor.data = tensor.data.clone()


# --- digests ----------------------------------------------------------------------


class _DigestCache:
    """sha256 per weight file keyed by (absolute path, mtime_ns, size), kept in a JSON file."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(
                read_text_capped(cache_file, MAX_DIGEST_CACHE_BYTES, "digest cache")
            )
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self.entries.get(key)
        if entry and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("size") == st.st_size:
            return str(entry["sha256"])
        digest = sha256_file(path)
        self.entries[key] = {"mtime_ns": st.st_mtime_ns, "size": st.st_size, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        # Write-then-rename so a concurrent reader never sees half a file.
        atomic_write_bytes(self.cache_file, json.dumps(self.entries, sort_keys=True).encode())
        self.dirty = False


def cached_sha256(path: Path, settings: Settings) -> str:
    """A weights file's sha256 through the digest cache (re-hashed only when its mtime or
    size changed): for checks that run on every plan, not for a worker's load-time pin."""
    cache = _DigestCache(Path(settings.model_cache_dir) / DIGEST_CACHE_NAME)
    digest = cache.sha256(path)
    with contextlib.suppress(OSError):  # a read-only cache dir only costs re-hashing
        cache.save()
    return digest


# The weight file names diffusers (models) and transformers (text encoders) load when no
# variant is asked for; ``.fp16.safetensors`` and other variants beside them are not read.
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
CONFIG_SUFFIXES = frozenset({".json", ".txt", ".model"})


def _component_weights(sub: Path) -> list[Path]:
    for stem in WEIGHT_STEMS:
        index = sub / f"{stem}.safetensors.index.json"
        if index.is_file():  # sharded: the shards its weight map names
            try:
                shards = json.loads(read_text_capped(index, 16 << 20, "weight index"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError, InputFileError) as exc:
                raise ModelLoadError(f"{index}: unreadable weight index ({exc})") from None
            return sorted({sub / str(name) for name in shards.values()})
        single = sub / f"{stem}.safetensors"
        if single.is_file():
            return [single]
    return []


def _is_config(f: Path) -> bool:
    # A variant's shard index (x.fp16.safetensors.index.json) belongs to the unused variant.
    if ".safetensors.index.json" in f.name:
        return f.name in {f"{stem}.safetensors.index.json" for stem in WEIGHT_STEMS}
    return f.suffix.lower() in CONFIG_SUFFIXES


def weight_files(path: Path) -> list[Path]:
    """The safetensors weights the pipeline loads from a model folder (each component's
    non-variant weights, as ``from_pretrained`` picks them), or the single checkpoint."""
    return [f for f in loaded_files(path) if f.suffix == ".safetensors"]


def loaded_files(path: Path) -> list[Path]:
    """Exactly the files loading ``path`` reads: ``model_index.json``, and for each component
    it names, the component's configs (tokenizer files included) and its weights. Anything
    else in the folder (variants, a root checkpoint, READMEs) is not read, so not hashed."""
    if path.is_file():
        return [path]
    try:
        index = json.loads(read_text_capped(path / "model_index.json", 1 << 20, "model index"))
    except (OSError, ValueError, InputFileError) as exc:
        raise ModelLoadError(f"{path}: unreadable model_index.json ({exc})") from None
    files = [path / "model_index.json"]
    for comp, value in sorted(index.items()):
        named = isinstance(value, list) and len(value) == 2 and value[0] and value[1]
        sub = path / comp
        if comp.startswith("_") or not named or not sub.is_dir():
            continue
        files += sorted(f for f in sub.iterdir() if f.is_file() and _is_config(f))
        files += _component_weights(sub)
    return files


def model_digest(spec: ModelSpec, settings: Settings) -> str:
    """sha256 over exactly the files loading the model reads (``loaded_files``: relative
    name + file sha256), each file's sha256 cached by mtime and size.

    For a single file this is the file's own sha256, so it matches ``sha256sum``.
    """
    path = spec.local_path(settings)
    cache = _DigestCache(Path(settings.model_cache_dir) / DIGEST_CACHE_NAME)
    if not weight_files(path):
        raise ModelLoadError(f"{spec.model_id}: no .safetensors weight files under {path}")
    files = loaded_files(path)
    if path.is_file():
        digest = cache.sha256(path)
    else:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(path).as_posix()}\0{cache.sha256(f)}\n".encode())
        digest = h.hexdigest()
    # A read-only cache dir only costs re-hashing next time.
    with contextlib.suppress(OSError):
        cache.save()
    return digest
