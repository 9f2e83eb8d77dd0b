"""Training sets under an s3:// prefix (moto's S3 server over HTTP)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import boto3
import pytest
from PIL import Image

from pipeline.settings import Settings
from pipeline.training.dataset import DatasetError, load_dataset
from tasks.training.sources import dataset_dir


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (i * 20, 90, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_s3_prefix_fetched_bounded_and_sanitized(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(k, v)
    bucket = f"train-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"sets/mugs/m{i}.png", Body=_png(i))
        s3.put_object(Bucket=bucket, Key=f"sets/mugs/m{i}.txt", Body=b"a mug")
    s3.put_object(Bucket=bucket, Key="sets/mugs/notes.pdf", Body=b"ignored")
    s3.put_object(Bucket=bucket, Key="sets/mugs/deeper/x.png", Body=_png(99))  # not under
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", s3_endpoint_url=moto_server)  # type: ignore[call-arg]

    folder = dataset_dir(settings, f"s3://{bucket}/sets/mugs")
    assert folder.is_relative_to(tmp_path / "var" / "training-sets")
    assert sorted(p.name for p in folder.iterdir())[:2] == ["m0.png", "m0.txt"]
    assert not (folder / "notes.pdf").exists() and not (folder / "deeper").exists()
    ds = load_dataset(folder, "sks")
    assert len(ds.images) == 10 and ds.images[0].caption == "sks, a mug"

    with pytest.raises(DatasetError, match="cannot read the training set"):
        dataset_dir(settings, "s3://no-such-bucket-here/x")
