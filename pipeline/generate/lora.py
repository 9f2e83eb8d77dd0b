"""Brand LoRA adapters on a diffusers pipeline: pinned, cached, switched and fused.

- Every adapter file is checked against its sha256 pin *before* it is read as weights.
- Only ``.safetensors`` files are accepted.
- Recently used adapters stay resident (LRU of ``cache_size``); switching between resident
  adapters is ``set_adapters(names, weights)``, not a reload.
- A batch uses one fixed adapter set, so it is fused into the base weights (an unfused
  LoRA costs ~12% throughput on an H100; a fused one costs nothing) and unfused when the
  next batch wants a different set. The base weights touched by a fuse are snapshotted
  and restored exactly on unfuse, so an image never depends on which adapter sets ran
  before it (plain ``unfuse`` subtracts the delta again and leaves rounding residue).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pipeline.digests import sha256_file
from pipeline.files import InputFileError, atomic_write_bytes
from pipeline.types import AdapterRef
from pipeline.weights import check_safetensors

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.storage import BlobStore

log = logging.getLogger(__name__)


# LoRAs are megabytes to a few hundred; anything near this is not an adapter.
MAX_LORA_BYTES = 4 << 30


class LoraError(ValueError):
    """An adapter that must not be loaded: missing, wrong format or a pin mismatch."""


STORE_SCHEME = "store"


def adapter_store_key(sha256: str) -> str:
    """Where an adapter lives in the blob store: by content, so a key names one file."""
    pin = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise LoraError(f"not a sha256 pin: {sha256!r}")
    return f"loras/{pin}.safetensors"  # content_key caps extensions at 10 characters


def adapter_store_uri(sha256: str) -> str:
    """The brand-config URI of an adapter in the blob store (``store://loras/<sha>...``)."""
    return f"{STORE_SCHEME}://{adapter_store_key(sha256)}"


def is_store_uri(uri: str) -> bool:
    return urlparse(uri).scheme == STORE_SCHEME


class StoreAdapters:
    """Adapters named by ``store://`` URIs: fetched from the blob store once into a local
    cache (``model_cache_dir/loras/<sha256>.safetensors``), the bytes checked against the
    pin before they are written, so every GPU host loads exactly the pinned adapter."""

    def __init__(self, settings: Settings, store: BlobStore | None = None) -> None:
        self.settings = settings
        self.cache_dir = Path(settings.model_cache_dir) / "loras"
        self._store = store

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            from pipeline.storage import make_blob_store

            self._store = make_blob_store(self.settings)
        return self._store

    def path_for(self, uri: str, sha256: str, name: str) -> Path:
        """The local copy of ``uri`` (``LoraError``: not in the store, or not the pinned
        bytes; a store that cannot be reached raises ``StorageError`` for a retry)."""
        from pipeline.storage import InvalidKeyError, check_key

        pin = sha256.lower()
        try:
            key = check_key(uri[len(STORE_SCHEME) + 3 :])
        except InvalidKeyError:
            raise LoraError(f"LoRA {name!r}: {uri}: not a blob store key") from None
        local = self.cache_dir / f"{pin}.safetensors"
        if local.is_file() and sha256_file(local) == pin:
            return local
        try:
            data = self.store.get(key)
        except FileNotFoundError:
            raise LoraError(f"LoRA {name!r}: {uri} is not in the blob store") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != pin:
            raise LoraError(
                f"LoRA {name!r}: sha256 mismatch for {uri}: pinned {sha256}, store has {actual}"
            )
        atomic_write_bytes(local, data)
        return local


def adapter_path(uri: str) -> Path:
    """A local path for an adapter URI (``file://`` or a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise LoraError(f"{uri}: only local adapter files are supported, not {parsed.scheme}://")
    return Path(uri)


def verify_adapter(ref: AdapterRef, fetch: StoreAdapters | None = None) -> Path:
    """Check format and sha256 pin of ``ref``'s file; return its path. Raises ``LoraError``.
    A ``store://`` adapter is fetched through ``fetch`` first."""
    if is_store_uri(ref.uri):
        if fetch is None:
            raise LoraError(f"LoRA {ref.name!r}: {ref.uri}: no blob store to fetch it from")
        path = fetch.path_for(ref.uri, ref.sha256, ref.name)
    else:
        path = adapter_path(ref.uri)
    if path.suffix.lower() != ".safetensors":
        raise LoraError(
            f"LoRA {ref.name!r}: {path.name} is not a .safetensors file; pickle formats are refused"
        )
    if not path.is_file():
        raise LoraError(f"LoRA {ref.name!r}: file not found: {path}")
    try:
        # The header first: a junk file is refused in one small read, before hashing it
        # and long before a loader maps it.
        check_safetensors(path, f"LoRA {ref.name!r}", MAX_LORA_BYTES)
        actual = sha256_file(path, f"LoRA {ref.name!r}")
    except InputFileError as exc:
        raise LoraError(str(exc)) from None
    if actual != ref.sha256.lower():
        raise LoraError(
            f"LoRA {ref.name!r}: sha256 mismatch for {path}: pinned {ref.sha256}, file has {actual}"
        )
    return path


def adapter_name(ref: AdapterRef) -> str:
    """A peft-safe adapter name, unique per (name, content)."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", ref.name)[:40] or "lora"
    return f"{safe}_{ref.sha256[:12]}"


AdapterSet = tuple[tuple[str, float], ...]


class LoraManager:
    """Keeps a pipeline's adapters in line with what each batch asks for."""

    def __init__(
        self,
        pipe: Any,
        cache_size: int = 4,
        fuse: bool = True,
        fetch: StoreAdapters | None = None,
    ) -> None:
        self.pipe = pipe
        self.fetch = fetch  # where store:// adapters come from
        self.cache_size = max(1, cache_size)
        self.fuse = fuse
        self._resident: OrderedDict[str, AdapterRef] = OrderedDict()
        self._active: AdapterSet = ()
        self._fused: AdapterSet | None = None
        self._snapshot: list[tuple[Any, Any]] = []  # (parameter, saved copy) for exact unfuse
        self._disabled = False
        self.loads = 0  # files read as weights; tests and benchmarks watch this

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    @property
    def active(self) -> AdapterSet:
        return self._active

    @property
    def fused(self) -> bool:
        return self._fused is not None

    def activate(self, adapters: Sequence[AdapterRef]) -> None:
        """Make exactly ``adapters`` (at their weights) apply to the next pipeline call."""
        wanted: AdapterSet = tuple((adapter_name(a), float(a.weight)) for a in adapters)
        if wanted == self._active and (self._fused is not None) == (self.fuse and bool(wanted)):
            for a in adapters:  # still "recently used"
                self._resident.move_to_end(adapter_name(a))
            return
        self._unfuse()
        for ref in adapters:
            self._ensure_loaded(ref, keep={n for n, _ in wanted})
        if wanted:
            if self._disabled:
                # peft unmerges a disabled layer on forward, so re-enable before fusing.
                self.pipe.enable_lora()
                self._disabled = False
            try:
                self.pipe.set_adapters(
                    [n for n, _ in wanted], adapter_weights=[w for _, w in wanted]
                )
            except ValueError as exc:
                # diffusers names no file here (an adapter whose tensors matched nothing
                # loads as no adapter at all): say which files were asked for.
                files = ", ".join(a.uri for a in adapters)
                raise LoraError(f"LoRA {files}: cannot apply ({exc})") from None
            if self.fuse:
                self._fuse(wanted)
        elif self._resident:
            self.pipe.disable_lora()
            self._disabled = True
        self._active = wanted

    def unload_all(self) -> None:
        """Drop every adapter and restore the exact base weights."""
        self._unfuse()
        if self._resident:
            self.pipe.unload_lora_weights()
        self._resident.clear()
        self._disabled = False
        self._active = ()

    # --- internals ---------------------------------------------------------------

    def _ensure_loaded(self, ref: AdapterRef, keep: set[str]) -> None:
        name = adapter_name(ref)
        if name in self._resident:
            self._resident.move_to_end(name)
            return
        # The pin is checked before the file is read as weights.
        path = verify_adapter(ref, self.fetch)
        while len(self._resident) >= self.cache_size:
            victim = next((n for n in self._resident if n not in keep), None)
            if victim is None:
                break  # a single batch needs more adapters than the cache holds
            self.pipe.delete_adapters([victim])
            del self._resident[victim]
            log.info("evicted LoRA adapter %s", victim)
        try:
            self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise LoraError(f"LoRA {ref.name!r}: cannot load {path}: {exc}") from None
        self._resident[name] = ref
        self.loads += 1

    def _lora_components(self) -> list[str]:
        return [
            c
            for c in ("unet", "transformer", "text_encoder", "text_encoder_2")
            if hasattr(self.pipe, c) and getattr(self.pipe, c) is not None
        ]

    def _fuse(self, wanted: AdapterSet) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        names = {n for n, _ in wanted}
        self._snapshot = []
        for comp in self._lora_components():
            for module in getattr(self.pipe, comp).modules():
                if isinstance(module, BaseTunerLayer) and names & set(module.active_adapters):
                    base = module.get_base_layer()
                    for pname in ("weight", "bias"):
                        p = getattr(base, pname, None)
                        if p is not None:
                            # Kept in host memory: GPU memory is what small cards lack.
                            self._snapshot.append((p, p.detach().to("cpu", copy=True)))
        self.pipe.fuse_lora(components=self._lora_components(), adapter_names=sorted(names))
        self._fused = wanted

    def _unfuse(self) -> None:
        if self._fused is None:
            return
        import torch

        self.pipe.unfuse_lora(components=self._lora_components())
        with torch.no_grad():
            for param, saved in self._snapshot:
                param.copy_(saved)
        self._snapshot = []
        self._fused = None


def write_random_lora(
    unet: Any,
    path: Path,
    rank: int = 4,
    seed: int = 0,
    scale: float = 0.5,
    target_modules: Sequence[str] = ("to_q", "to_k", "to_v", "to_out.0"),
) -> str:
    """Add a random peft LoRA to ``unet``'s attention projections, save it, then remove it.

    Writes the diffusers LoRA format that ``load_lora_weights`` reads and returns the file's
    sha256. Used for the sample adapter and the test adapters; the B matrices are
    random (not zero) so the adapter visibly changes the output.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    gen = torch.Generator().manual_seed(seed)
    name = "shotline_tmp_lora"
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            target_modules=list(target_modules),
            init_lora_weights="gaussian",
        ),
        adapter_name=name,
    )
    with torch.no_grad():
        for pname, p in unet.named_parameters():
            if f"lora_B.{name}" in pname or f"lora_A.{name}" in pname:
                p.copy_(
                    torch.randn(p.shape, generator=gen).to(p.dtype) * scale / max(1, rank) ** 0.5
                )
    state = get_peft_model_state_dict(unet, adapter_name=name)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(path.parent), unet_lora_layers=state, weight_name=path.name, safe_serialization=True
    )
    unet.delete_adapters(name)
    return sha256_file(path)
