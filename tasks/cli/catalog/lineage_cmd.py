"""``shotline lineage REF | --lora NAME[@SHA256] | --import-run ID | --like ASSET [--top K]``
and the ``verify`` hook.

REF resolution (``catalog.lineage``): ``asset:ID``, ``shot:ID``, ``sku:SKU``, a blob key
(anything with a ``/``, ``s3://bucket/key`` too), else a sku.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tasks.cli.common import MAX_ID, CliState, cli_state, console, fail, print_json

if TYPE_CHECKING:
    pass


def _short(digest: Any, n: int = 16) -> str:
    return str(digest)[:n] if digest else "-"


def _e(value: Any) -> str:
    return escape(str(value)) if value is not None else "-"


def _num(value: Any) -> str:
    """Scores to 3 decimals for reading; ``--json`` keeps full precision."""
    return f"{value:.3f}" if isinstance(value, float) else _e(value)


def _add_sources(tree: Tree, chain: Mapping[str, Any]) -> None:
    """What the shot was planned from: CSV line, product revision, brand config, template."""
    src = chain.get("csv")
    if src:
        tree.add(
            f"CSV {_e(src['uri'])} line {_e(src['line'])}  sha256 {_e(src['sha256'])}  "
            f"(import run {_e(src['import_run_id'])})"
        )
    else:
        tree.add("CSV: [dim]not recorded[/]")
    rev = chain["product_revision"]
    tree.add(
        f"product revision {rev['id']} (rev {rev['revision']}) {_e(rev['title'])}  "
        f"hash {_short(rev['content_hash'])}"
    )
    bc = chain["brand_config"]
    stale = "" if bc["is_current"] else " [yellow](config changed since)[/]"
    tree.add(f"brand config digest {_e(bc['digest'])}{stale}")
    tree.add(f"template {_e(chain['template']['name'])}  digest {_e(chain['template']['digest'])}")
    _add_packshot(tree, chain.get("packshot"))


def _add_packshot(tree: Tree, pk: Mapping[str, Any] | None) -> None:
    """A packshot shot: the catalog image, its cutout and where it was placed."""
    if not pk:
        return
    src = pk.get("source_image") or {}
    node = tree.add(
        f"source image {_e(src.get('url'))}  sha256 {_e(src.get('sha256'))}  "
        f"{_e(src.get('width'))}x{_e(src.get('height'))}  ({_e(src.get('status'))})"
    )
    cut = pk.get("cutout")
    if isinstance(cut, Mapping):
        node.add(
            f"cutout {_e(cut.get('method'))}  params {_e(cut.get('params'))}  "
            f"mask sha256 {_e(cut.get('mask_sha256'))}"
        )
    if pk.get("placement"):
        node.add(f"placement {_e(pk['placement'])}")
    cn = pk.get("controlnet")
    if isinstance(cn, Mapping):
        node.add(
            f"controlnet {_e(cn.get('kind'))} {_e(cn.get('path'))}  sha256 {_e(cn.get('sha256'))}"
            f"  scale {_e(cn.get('scale'))}  canny {_e(cn.get('canny_low'))}-"
            f"{_e(cn.get('canny_high'))}"
        )


def _add_generation(tree: Tree, chain: Mapping[str, Any]) -> None:
    """How the raw image was made: prompt, model and LoRAs, sampling, the raw image."""
    prompt = tree.add(f"prompt: {_e(chain['prompt']['text'])}")
    if chain["prompt"]["negative"]:
        prompt.add(f"negative: {_e(chain['prompt']['negative'])}")
    for rm in chain["prompt"]["sanitizer_removals"]:
        prompt.add(f"[yellow]removed[/] {_e(rm)}")
    model = tree.add(f"model {_e(chain['model']['id'])}  digest {_e(chain['model']['digest'])}")
    for lora in chain["loras"]:
        node = model.add(
            f"LoRA {_e(lora.get('name'))} @ {_e(lora.get('weight'))}  "
            f"sha256 {_e(lora.get('sha256'))}"
        )
        run = lora.get("training")
        if run:
            node.add(
                f"training run {run['id']}  dataset {_e(run['dataset_digest'])}  "
                f"base {_e(run['base_model'])}  steps {run['steps']}"
            )
    sp = chain["sampling"]
    tree.add(
        f"seed {sp['seed']}  steps {sp['steps']}  guidance {sp['guidance']}  "
        f"scheduler {_e(sp['scheduler'])}  {sp['width']}x{sp['height']}"
    )
    gen = chain.get("generation")
    tree.add(
        f"raw image sha256 {_e(gen['raw_sha256'])}  "
        f"({_e(gen['device'])}, batch {_e(gen['batch_id'])})"
        if gen
        else "raw image: [dim]not generated[/]"
    )


def _add_filter(tree: Tree, fr: Mapping[str, Any] | None) -> None:
    if not fr:
        tree.add("filter: [dim]not gated[/]")
        return
    node = tree.add(
        f"filter {fr['decision']}  policy {_e(fr['policy_version'])}  "
        f"clip {_e(fr['clip_model'])}"
        + (f"  [red]{_e('; '.join(map(str, fr['reasons'])))}[/]" if fr["reasons"] else "")
    )
    for sc in fr["scores"]:
        if isinstance(sc, Mapping):
            mark = "[red]triggered[/]" if sc.get("triggered") else ""
            node.add(
                f"{_e(sc.get('name'))}: {_num(sc.get('score'))} / "
                f"{_num(sc.get('threshold'))} {mark}"
            )


def _add_outcome(tree: Tree, chain: Mapping[str, Any]) -> None:
    """What happened after the gate: watermark, review decisions, the published asset."""
    wm = chain.get("watermark")
    tree.add(
        f"watermark {_e(wm['method'])} payload {_e(wm['payload'])}  verified {wm['verified']}"
        if wm
        else "watermark: [dim]none[/]"
    )
    review = tree.add(f"review: {_e(chain['review']['state'] or 'no decision')}")
    for ev in chain["review"]["events"]:
        note = f" — {_e(ev['note'])}" if ev.get("note") else ""
        review.add(f"{_e(ev['at'])} {_e(ev['action'])} by {_e(ev['reviewer'])}{note}")
    asset = chain.get("asset")
    tree.add(
        f"asset {asset['id']}: {_e(asset['key'])}  sha256 {_e(asset['sha256'])}  "
        f"etag {_e(asset['etag'])}"
        if asset
        else "asset: [dim]not published[/]"
    )
    _add_delivery(tree, chain.get("delivery"))


def _add_delivery(tree: Tree, delivery: Mapping[str, Any] | None) -> None:
    """The asset's status (current, superseded, recalled) and every rendition."""
    if not delivery:
        return
    node = tree.add(f"delivery: {_e(delivery.get('status'))}")
    rec = delivery.get("recall")
    if rec:
        node.add(f"recalled {_e(rec['at'])} by {_e(rec['by'])}: {_e(rec['reason'])}")
    for r in delivery.get("renditions") or []:
        node.add(
            f"{_e(r['channel'])}/{_e(r['name'])}: {_e(r['key'])}  {r['width']}x{r['height']}  "
            f"watermark verified {r['watermark_verified']}  XMP AI tag {r['xmp_ai_tag']}"
        )


def chain_tree(chain: Mapping[str, Any]) -> Tree:
    """One shot's chain as a rich tree, in production order (CSV line first)."""
    tree = Tree(
        f"[bold]shot {chain['shot_id']}[/] · {_e(chain['brand'])} / {_e(chain['sku'])} · "
        f"state [bold]{chain['state']}[/]"
    )
    _add_sources(tree, chain)
    _add_generation(tree, chain)
    _add_filter(tree, chain.get("filter"))
    _add_outcome(tree, chain)
    return tree


def print_summary(chain: Mapping[str, Any]) -> None:
    """The lineage as ``review show`` prints it."""
    console.print(chain_tree(chain))


def verify_lineage(state: CliState, shot_id: int | None) -> dict[str, Any] | None:
    """The chain of the shot a watermark decoded to, or None (no id, or not in this catalog)."""
    from catalog.lineage import shot_lineage

    if shot_id is None:
        return None
    with state.session() as s:
        return shot_lineage(s, int(shot_id))


def attach_lineage(state: CliState, report: dict[str, Any]) -> dict[str, Any]:
    """``shotline verify`` hook: ``tasks.verify.attach_lineage`` (shared with the web API)."""
    from tasks.verify import attach_lineage as attach

    return attach(state, report)


def print_lineage(report: Mapping[str, Any]) -> None:
    """``shotline verify`` text output: the chain (or why there is none) after the report."""
    chain = report.get("lineage")
    if chain:
        console.print(chain_tree(chain))
    elif report.get("lineage_note"):
        console.print(f"  lineage: {report['lineage_note']}", markup=False, highlight=False)


def _check_like(like: str) -> None:
    """An id given to --like is bounded like every other id (a 40-digit one overflowed the
    query); a key is looked up as it is."""
    text = like.strip().removeprefix("asset:")
    if text.isdigit() and (not text.isascii() or not 1 <= int(text) <= MAX_ID):
        fail(f"--like {like}: asset ids run from 1 to {MAX_ID}")


def _lookup(
    state: CliState,
    ref: str | None,
    lora: str | None,
    import_run: int | None,
    source: str | None = None,
    training: int | None = None,
    like: Any = None,
) -> Any:
    from catalog.lineage import (
        LineageError,
        assets_by_lora,
        assets_by_training,
        assets_like,
        lineage_for,
        parse_lora_ref,
    )
    from catalog.packshots.source_lineage import UnknownSource, outputs_of_source
    from catalog.training import TrainingNotFound

    try:
        with state.session() as s:
            if like is not None:
                return assets_like(s, like[0], top=like[1])
            if source is not None:
                return outputs_of_source(s, source)
            if training is not None:
                return assets_by_training(s, training)
            if lora is not None:
                name, sha = parse_lora_ref(lora)
                return assets_by_lora(s, name, sha)
            return lineage_for(s, str(ref))
    except (LineageError, UnknownSource, TrainingNotFound) as exc:
        fail(str(exc))


def lineage(
    ctx: typer.Context,
    ref: str | None = typer.Argument(
        None, metavar="[REF]", help="asset:ID, shot:ID, sku:SKU, a blob/S3 key, or a sku."
    ),
    lora: str | None = typer.Option(
        None, "--lora", metavar="NAME[@SHA256]", help="Published assets made with this LoRA."
    ),
    import_run: int | None = typer.Option(
        None, "--import-run", metavar="ID", help="What this import run produced.", min=1, max=MAX_ID
    ),
    source: str | None = typer.Option(
        None, "--source", metavar="URL|SHA256", help="Shots and assets made from this image."
    ),
    training: int | None = typer.Option(
        None,
        "--training",
        metavar="RUN",
        help="Published assets made with this run's adapter.",
        min=1,
        max=MAX_ID,
    ),
    like: str | None = typer.Option(
        None, "--like", metavar="ASSET", help="Published assets nearest to this one (id or key)."
    ),
    top: int = typer.Option(10, "--top", min=1, max=1000, help="How many --like neighbours."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Trace images back to their CSV line (or list what a LoRA, an import run, a source
    image or a training run produced, or the published assets that look most like one)."""
    if like is not None:
        _check_like(like)
    if sum(x is not None for x in (ref, lora, import_run, source, training, like)) != 1:
        fail(
            "give exactly one of REF, --lora NAME[@SHA256], --import-run ID, --source URL, "
            "--training RUN or --like ASSET"
        )
    if import_run is not None:
        _import_run(cli_state(ctx), import_run, json_out)
        return
    data = _lookup(
        cli_state(ctx), ref, lora, import_run, source, training, (like, top) if like else None
    )
    if json_out:
        print_json(data)
    elif like is not None:
        _print_like(like, data)
    elif source is not None:
        _print_source(data)
    elif training is not None:
        _print_lora(f"training run {training}", data)
    elif lora is not None:
        _print_lora(lora, data)
    else:
        for chain in data["chains"]:
            console.print(chain_tree(chain))


def _print_lora(ref: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} published asset(s) made with {escape(ref)}")
    for col in ("asset", "shot", "sku", "template", "weight", "lora sha256", "key"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["asset_id"]),
            str(r["shot_id"]),
            _e(r["sku"]),
            _e(r["template"]),
            _e(r["lora"]["weight"]),
            _short(r["lora"]["sha256"]),
            _e(r["key"]),
        )
    console.print(table)


def _print_source(data: dict[str, Any]) -> None:
    for src in data["sources"]:
        console.print(
            f"source image {src['id']}: {_e(src['url'])}  sha256 {_e(src['sha256'])} "
            f"({_e(src['status'])})"
        )
    table = Table(title=f"{len(data['shots'])} shot(s) made from it")
    for col in ("shot", "product", "template", "state", "mask sha256", "asset key"):
        table.add_column(col, overflow="fold")
    for r in data["shots"]:
        table.add_row(
            str(r["shot_id"]),
            _e(r["product_key"]),
            _e(r["template"]),
            r["state"],
            _short(r["mask_sha256"]),
            _e(r["asset_key"]),
        )
    console.print(table)


def _import_run(state: CliState, run_id: int, json_out: bool) -> None:
    """``lineage --import-run``: rows are written as the server-side cursor yields them, so
    a run of 300,000 shots holds one fetch of rows, not all of them."""
    from catalog.lineage import LineageError, import_run_outputs

    try:
        with state.session() as s:
            data = import_run_outputs(s, run_id)
            if json_out:
                _stream_json_object(data)
            else:
                _print_run(data)
    except LineageError as exc:
        fail(str(exc))


def _stream_json_object(data: Mapping[str, Any]) -> None:
    """A JSON object (indent 2, as ``print_json`` writes it) whose iterator values are
    written as arrays element by element."""
    out = sys.stdout
    out.write("{")
    for n, (key, value) in enumerate(data.items()):
        out.write(("," if n else "") + f"\n  {json.dumps(key)}: ")
        if isinstance(value, Iterator):
            first = True
            for item in value:
                text = json.dumps(item, indent=2, default=str)
                out.write(("[\n" if first else ",\n") + textwrap.indent(text, "    "))
                first = False
            out.write("[]" if first else "\n  ]")
        else:
            text = json.dumps(value, indent=2, default=str)
            out.write(text.replace("\n", "\n  "))
    out.write("\n}\n")
    out.flush()


RUN_TABLE_ROWS = 100  # shots per printed table: the rows are printed as they are read


def _print_run(data: dict[str, Any]) -> None:
    run = data["run"]
    states = ", ".join(f"{k} {v}" for k, v in sorted(data["states"].items())) or "no shots"
    console.print(
        f"import run {run['id']}: {_e(run['uri'])} sha256 {_e(run['sha256'])} "
        f"({run['status']}, {run['rows_total']} rows, "
        f"{data['revision_count']} revisions) — {states}"
    )
    batch: list[dict[str, Any]] = []
    for r in data["shots"]:
        batch.append(r)
        if len(batch) == RUN_TABLE_ROWS:
            _run_table(batch)
            batch = []
    if batch:
        _run_table(batch)


def _run_table(rows: list[dict[str, Any]]) -> None:
    table = Table()
    for col in ("shot", "sku", "template", "state", "asset key"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["shot_id"]), _e(r["sku"]), _e(r["template"]), r["state"], _e(r["asset_key"])
        )
    console.print(table)


def _print_like(ref: str, data: dict[str, Any]) -> None:
    rows = data["neighbours"]
    table = Table(title=f"{len(rows)} published asset(s) nearest to asset {data['asset_id']}")
    for col in ("asset", "shot", "cosine", "sku", "key"):
        table.add_column(col, overflow="fold", justify="right" if col == "cosine" else "left")
    for r in rows:
        table.add_row(
            str(r["asset_id"]), str(r["shot_id"]), f"{r['cosine']:.4f}", _e(r["sku"]), _e(r["key"])
        )
    console.print(table)
