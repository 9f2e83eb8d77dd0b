"""``shotline review list|show|sheet|approve|reject|export``.

The reviewer comes from ``--reviewer`` or ``SHOTLINE_REVIEWER``; without one, approving and
rejecting fail (there is no anonymous approval). Approval enqueues publishing, which runs
in-process on the embedded default.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tasks.cli.catalog import lineage_cmd
from tasks.cli.common import (
    COUNT_MAX,
    MAX_ID,
    CliState,
    cli_state,
    console,
    err_console,
    fail,
    print_json,
)
from tasks.cli.quality import review_web_cmd
from tasks.output import styled

if TYPE_CHECKING:
    from catalog.models import Shot
    from pipeline.review.contact_sheet import SheetEntry
    from pipeline.settings import Settings


review_app = typer.Typer(
    help="Review gated images: list, look, approve, reject.", no_args_is_help=True
)

BrandOpt = typer.Option(None, "--brand", help="Only this brand.")
ImportRunOpt = typer.Option(
    None, "--import-run", help="Only products of this import run.", min=1, max=MAX_ID
)
TemplateOpt = typer.Option(None, "--template", help="Only this template.")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")
ReviewerOpt = typer.Option(
    None, "--reviewer", help="Who decides (default: SHOTLINE_REVIEWER).", show_default=False
)

PACKSHOT_NOTE = (
    " Packshot shots: the scene around the product is that noise; the product is the"
    " catalog's own packshot (here the sample drawings), its pixels pasted back unchanged."
)
TINY_BANNER = (
    "TINY PRESET: these images come from a randomly initialised test model. They are noise,"
    " not product photos, and their CLIP scores mean nothing."
)


def _status(status: str | None, default: Sequence[str] | str | None) -> Sequence[str] | str | None:
    from catalog.review import REVIEW_STATES, SUPERSEDED

    if status is None:
        return default
    if status not in (*REVIEW_STATES, SUPERSEDED):
        fail(f"--status {status!r}: expected one of {', '.join((*REVIEW_STATES, SUPERSEDED))}")
    return status


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)


def _scores_cell(scores: Sequence[Mapping[str, Any]]) -> Text:
    """One line per score. A ``Text`` (our own newlines between escaped values): a plain
    string cell goes through the console's escaping, which would show each newline as
    ``\\x0a``."""
    lines = [
        styled(
            (
                f"{s.get('name')} {_fmt(s.get('score'))}/{_fmt(s.get('threshold'))}",
                "red" if s.get("triggered") else None,
            )
        )
        for s in scores
    ]
    return Text("\n").join(lines)


def _flagged_shots(
    state: CliState,
    s: Any,
    brand: str | None,
    status: str | None,
    import_run: int | None,
    template: str | None,
    limit: int | None,
) -> tuple[list[Shot], dict[int, Any]]:
    """The shots ``review list`` and ``review sheet`` show (pending by default), with their
    near-duplicate flags."""
    from catalog.models import ShotState
    from catalog.review import list_shots, near_duplicate_flags

    shots = list_shots(
        s,
        brand=brand,
        status=_status(status, ShotState.pending_review.value),
        import_run=import_run,
        template=template,
        limit=limit,
    )
    return shots, near_duplicate_flags(s, shots, state.settings.near_duplicate_threshold)


def _image_bytes(store: Any, shot: Shot) -> bytes | None:
    """The gated final file if there is one, else the raw generation; None when missing."""
    keys = []
    if shot.watermark is not None:
        keys.append(shot.watermark.image_key)
    if shot.generation is not None and shot.generation.blob_key:  # "": raw not stored
        keys.append(shot.generation.blob_key)
    for key in keys:
        try:
            return bytes(store.get(key))
        except Exception:  # a missing blob shows as "image missing", never a traceback
            continue
    return None


def _blob(store: Any, key: Any) -> bytes | None:
    if not key:
        return None
    try:
        return bytes(store.get(str(key)))
    except Exception:  # a missing blob shows as missing on the sheet, never a traceback
        return None


def _packshot_files(store: Any, shot: Shot) -> tuple[bytes | None, bytes | None, str]:
    """A packshot shot's source image and cutout mask, and how the sheet names the source."""
    src = shot.source_image
    if src is None:
        return None, None, ""
    cutout = (shot.packshot or {}).get("cutout") or {}
    label = f"{src.url} (sha256 {(src.sha256 or '-')[:12]})"
    return _blob(store, src.blob_key), _blob(store, cutout.get("mask_key")), label


def _blob_store(settings: Settings) -> Any:
    from pipeline.storage import make_blob_store

    return make_blob_store(settings)


# --- list / show -------------------------------------------------------------------------


LIST_LIMIT = 50  # rows `review list` shows without --limit/--all
TABLE_ROWS = 100  # rows per printed table when a listing runs long


def _print_table(records: Sequence[dict[str, Any]], title: str | None) -> None:
    table = Table(title=title, show_lines=True)
    for col in ("id", "sku", "template", "state", "key scores", "reasons"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            styled((str(r["id"]), "bold")),
            styled(r["sku"]),
            styled(r["template"]),
            styled(r["state"]),
            _scores_cell(r["key_scores"]),
            styled("; ".join(str(x) for x in _reasons_and_flags(r))),
        )
    console.print(table)


def _print_list(records: Iterable[dict[str, Any]]) -> int:
    """Tables of at most ``TABLE_ROWS`` rows, printed as the records arrive."""
    batch: list[dict[str, Any]] = []
    n = 0
    for r in records:
        batch.append(r)
        n += 1
        if len(batch) == TABLE_ROWS:
            _print_table(batch, None)
            batch = []
    if batch or n == 0:
        _print_table(batch, None)
    console.print(f"{n} shot(s)")
    return n


def _stream_json(records: Iterable[Any]) -> None:
    """A JSON array written element by element: the same text ``print_json`` writes for the
    whole list, without holding it."""
    out = sys.stdout
    first = True
    for rec in records:
        out.write("[\n" if first else ",\n")
        # textwrap.indent's result, without its regex: json.dumps writes no blank lines
        out.write("  " + json.dumps(rec, indent=2, default=str).replace("\n", "\n  "))
        first = False
    out.write("[]\n" if first else "\n]\n")
    out.flush()


def _reasons_and_flags(r: Mapping[str, Any]) -> list[str]:
    """The gate's reasons, then the near-duplicate note (review's own flag, not a gate reason)."""
    dup = r.get("near_duplicate")
    return [str(x) for x in r["reasons"]] + ([dup["note"]] if dup else [])


def _records(
    pages: Iterator[list[dict[str, Any]]], limit: int | None, more: list[int]
) -> Iterator[dict[str, Any]]:
    """Review records page by page, at most ``limit``; when there are more, ``more`` gets the
    last id shown (the next ``--after``)."""
    n, last = 0, 0
    for page in pages:
        for rec in page:
            if limit is not None and n == limit:
                more.append(last)
                return
            last = rec["id"]
            n += 1
            yield rec


@review_app.command("list")
def list_cmd(
    ctx: typer.Context,
    brand: str | None = BrandOpt,
    status: str | None = typer.Option(
        None,
        "--status",
        help="pending_review (default), rejected, approved, published or superseded.",
    ),
    import_run: int | None = ImportRunOpt,
    template: str | None = TemplateOpt,
    limit: int = typer.Option(
        LIST_LIMIT, "--limit", min=1, max=COUNT_MAX, help="At most this many shots."
    ),
    after: int | None = typer.Option(
        None, "--after", metavar="ID", min=0, max=MAX_ID, help="Start past this shot id."
    ),
    all_rows: bool = typer.Option(
        False, "--all", help="Every matching shot (streamed page by page; ignores --limit)."
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Shots awaiting review (or in --status), oldest first, --limit at a time (--after ID for
    the next page, --all for every one): id, sku, template, key scores, reasons."""
    from catalog.models import ShotState
    from catalog.review import COLUMN_PAGE_ROWS, iter_records

    state = cli_state(ctx)
    cap = None if all_rows else limit
    more: list[int] = []
    with state.session() as s:
        pages = iter_records(
            s,
            brand=brand,
            status=_status(status, ShotState.pending_review.value),
            import_run=import_run,
            template=template,
            after=after,
            # one row past the limit tells whether there is a next page
            page=COLUMN_PAGE_ROWS if cap is None else min(COLUMN_PAGE_ROWS, cap + 1),
            near_duplicate_threshold=state.settings.near_duplicate_threshold,
        )
        records = _records(pages, cap, more)
        if json_out:
            _stream_json(records)
        else:
            _print_list(records)
    if more and not json_out:
        err_console.print(f"more shots follow: --after {more[0]} for the next page, or --all")


# Viewer copies live in one folder under var/ and are pruned: a viewer started by
# ``typer.launch`` (xdg-open, open) returns before it has read the file, so the copy can't be
# deleted on return, and a temp file per call would pile up in /tmp.
OPEN_DIR = "review-open"
OPEN_KEEP_SECONDS = 3600.0


def prune_open_copies(folder: Path, keep_seconds: float = OPEN_KEEP_SECONDS) -> int:
    """Delete viewer copies older than ``keep_seconds``; returns how many went."""
    gone = 0
    cutoff = time.time() - keep_seconds
    for old in folder.glob("shot-*"):
        try:
            if old.is_file() and old.stat().st_mtime < cutoff:
                old.unlink()
                gone += 1
        except OSError:
            continue  # another invocation pruned it first
    return gone


def open_copy(var_dir: Path, shot_id: int, image: bytes) -> Path:
    """The viewer copy of one shot's image: one file per shot and content, rewritten atomically,
    so opening the same shot twice leaves one file."""
    from pipeline.files import atomic_write_bytes

    folder = var_dir / OPEN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    prune_open_copies(folder)
    ext = "png" if image.startswith(b"\x89PNG") else "img"
    path = folder / f"shot-{shot_id}-{hashlib.sha256(image).hexdigest()[:12]}.{ext}"
    atomic_write_bytes(path, image)
    return path


def _open_image(var_dir: Path, shot_id: int, image: bytes | None) -> None:
    """Hand the shot's image to the desktop's viewer (from a pruned copy under var/)."""
    if image is None:
        fail(f"shot {shot_id}: no image stored for it")
    path = open_copy(var_dir, shot_id, image)
    err_console.print(styled("opening ", str(path)))
    typer.launch(str(path))


@review_app.command("show")
def show_cmd(
    ctx: typer.Context,
    shot_id: int = typer.Argument(..., metavar="ID", min=1, max=MAX_ID),
    open_image: bool = typer.Option(False, "--open", help="Open the image in the viewer."),
    json_out: bool = JsonOpt,
) -> None:
    """The full record of one shot: prompt, scores against thresholds, lineage summary."""
    from catalog.lineage import shot_chain
    from catalog.review import near_duplicate_flags, review_record, review_shot

    state = cli_state(ctx)
    with state.session() as s:
        shot = review_shot(s, shot_id)
        if shot is None:
            fail(f"shot {shot_id}: no such shot")
        dups = near_duplicate_flags(s, [shot], state.settings.near_duplicate_threshold)
        record = review_record(shot, dups.get(shot.id))
        chain = shot_chain(s, shot)
        image = _image_bytes(_blob_store(state.settings), shot) if open_image else None
    if json_out:
        print_json({**record, "lineage": chain})
    else:
        _print_record(record, chain)
    if open_image:
        _open_image(state.settings.var_dir, shot_id, image)


def _scores_table(scores: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="scores")
    for col in ("name", "kind", "score", "threshold", "triggered"):
        table.add_column(col)
    for sc in scores:
        hit = bool(sc.get("triggered"))
        table.add_row(
            escape(str(sc.get("name"))),
            escape(str(sc.get("kind", ""))),
            _fmt(sc.get("score")),
            _fmt(sc.get("threshold")),
            "[red]yes[/]" if hit else "no",
        )
    return table


def _print_record(r: dict[str, Any], chain: dict[str, Any]) -> None:
    # Text lines joined by our own newlines: the values in them are escaped, the separators
    # are not (a plain string would show every newline as a literal \\x0a).
    body = [
        styled(
            (f"shot {r['id']}", "bold"),
            f"  {r['sku']} · {r['template']} · state ",
            (str(r["state"]), "bold"),
            f" · gate {r['gate_decision'] or '-'}",
        ),
        styled(f"prompt: {r['prompt']}"),
        styled(f"negative: {r['negative_prompt'] or ''}"),
    ]
    removals = chain["prompt"]["sanitizer_removals"]
    if removals:
        terms = ", ".join(
            str(x.get("term", x)) if isinstance(x, Mapping) else str(x) for x in removals
        )
        body.append(styled(f"sanitizer removed: {terms}"))
    if r["reasons"]:
        body.append(styled((f"reasons: {'; '.join(str(x) for x in r['reasons'])}", "red")))
    if r.get("near_duplicate"):
        body.append(styled((str(r["near_duplicate"]["note"]), "yellow")))
    console.print(Panel(Text("\n").join(body), expand=False))
    if r["scores"]:
        console.print(_scores_table(r["scores"]))
    lineage_cmd.print_summary(chain)


# --- contact sheet -----------------------------------------------------------------------


def _entries(
    shots: Sequence[Shot], store: Any, dups: Mapping[int, dict[str, Any]] | None = None
) -> list[SheetEntry]:
    from catalog.review import review_record
    from pipeline.review.contact_sheet import SheetEntry

    entries = []
    for shot in shots:
        r = review_record(shot, (dups or {}).get(shot.id))
        source, mask, label = _packshot_files(store, shot)
        entries.append(
            SheetEntry(
                shot_id=r["id"],
                sku=r["sku"],
                template=r["template"],
                prompt=r["prompt"],
                image=_image_bytes(store, shot),
                state=r["state"],
                decision=r["gate_decision"],
                reasons=tuple(_reasons_and_flags(r)),
                scores=tuple(r["scores"]),
                source=source,
                mask=mask,
                source_label=label,
            )
        )
    return entries


def _write_sheet(
    out: Path, entries: list[SheetEntry], title: str, banner: str | None, columns: int | None
) -> tuple[Path, Path]:
    from pipeline.outputs import OutputPathError, check_output_dir, write_output_bytes
    from pipeline.review.contact_sheet import render_grid_png, render_html

    try:
        check_output_dir(out)  # a symlinked folder would put the sheet elsewhere
        out.mkdir(parents=True, exist_ok=True)
        html_path, png_path = out / "contact-sheet.html", out / "contact-sheet.png"
        html = render_html(entries, title=title, banner=banner).encode("utf-8")
        write_output_bytes(html_path, html)
        write_output_bytes(png_path, render_grid_png(entries, columns=columns, banner=banner))
    except OutputPathError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write the contact sheet: {exc.strerror or exc}")
    return html_path, png_path


def write_contact_sheet(
    state: CliState,
    out: Path,
    *,
    brand: str | None = None,
    status: str | None = None,
    import_run: int | None = None,
    template: str | None = None,
    limit: int = 500,
    columns: int | None = None,
) -> None:
    """``review sheet`` for callers with their own state (the demo): HTML and PNG in ``out``."""
    with state.session() as s:
        shots, dups = _flagged_shots(state, s, brand, status, import_run, template, limit)
        with console.status(f"loading {len(shots)} image(s)"):
            entries = _entries(shots, _blob_store(state.settings), dups)
    title = "shotline contact sheet" + (f": {brand}" if brand else "")
    # Never let tiny-preset noise pass for product photography, even out of context.
    banner = TINY_BANNER if any(sh.model_id == "tiny" for sh in shots) else None
    if banner and any(sh.source_image_id is not None for sh in shots):
        banner += PACKSHOT_NOTE
    html_path, png_path = _write_sheet(out, entries, title, banner, columns)
    missing = sum(1 for e in entries if e.image is None)
    console.print(f"{len(entries)} image(s){f', {missing} missing' if missing else ''}")
    console.print(f"contact sheet: {escape(str(html_path))}", highlight=False, soft_wrap=True)
    console.print(f"PNG grid: {escape(str(png_path))}", highlight=False, soft_wrap=True)


@review_app.command("sheet")
def sheet_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Folder for contact-sheet.html and .png."),
    brand: str | None = BrandOpt,
    status: str | None = typer.Option(None, "--status", help="Default: pending_review."),
    import_run: int | None = ImportRunOpt,
    template: str | None = TemplateOpt,
    limit: int = typer.Option(
        500, "--limit", min=1, max=COUNT_MAX, help="At most this many images."
    ),
    columns: int | None = typer.Option(None, "--columns", min=1, max=100, help="PNG grid columns."),
) -> None:
    """A contact sheet: a self-contained HTML page plus a PNG grid of the same images."""
    write_contact_sheet(
        cli_state(ctx),
        out,
        brand=brand,
        status=status,
        import_run=import_run,
        template=template,
        limit=limit,
        columns=columns,
    )


# --- decisions ---------------------------------------------------------------------------


def _apply(
    state: CliState, fn: Any, claimed: str | None, *args: Any, **kw: Any
) -> tuple[list[int], str]:
    """Resolve who reviews (the authenticated login, or the claimed name where allowed), then
    apply ``fn`` in one transaction: the shot ids decided and the reviewer's name. Who may
    review a brand is read from its YAML now (an edited ``reviewers:`` applies at once)."""
    from catalog.review import ReviewError, resolve_reviewer

    settings = state.settings
    try:
        with state.session() as s:
            who = resolve_reviewer(
                s, claimed or settings.reviewer, free_names=settings.review_free_names
            )
            done = fn(s, *args, reviewer=who, brands_dir=settings.brands_dir, **kw)
            ids = [e if isinstance(e, int) else e.shot_id for e in done]
            return ids, who.name
    except ReviewError as exc:
        fail(str(exc))


def _check_selection(shot_ids: Sequence[int] | None, all_pending: bool, *filters: Any) -> None:
    if bool(shot_ids) == all_pending:
        fail("give shot IDs or --all-pending (with optional filters), not both or neither")
    if not all_pending and any(f is not None for f in filters):
        fail("--brand/--import-run/--template only filter --all-pending")


def _id_list(ids: Sequence[int], shown: int = 20) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _report_published(state: CliState, ids: list[int]) -> None:
    """After an in-process publish: how many made it, and why the others failed (exit 1)."""
    from catalog.models import ShotState
    from catalog.status import shot_states

    with state.session() as s:
        states = shot_states(s, ids)
    published = [i for i in ids if states[i][0] == ShotState.published]
    console.print(f"published {len(published)} of {len(ids)}")
    failed = [i for i in ids if states[i][0] == ShotState.failed]
    for sid in failed:
        err_console.print(f"shot {sid}: publishing failed: {escape(states[sid][1] or '?')}")
    # A shot approved here but decided again before publishing ran (a concurrent reject):
    # publishing skipped it, and the approval did not take effect. Say so, exit 2.
    overtaken = [i for i in ids if states[i][0] not in (ShotState.published, ShotState.failed)]
    for sid in overtaken:
        err_console.print(
            styled(
                ("error:", "bold red"),
                f" shot {sid}: not published: it is {states[sid][0]} now "
                "(another review decided it after this approval)",
            )
        )
    if failed:
        raise typer.Exit(1)
    if overtaken:
        raise typer.Exit(2)


def _publish(state: CliState, ids: list[int]) -> None:
    from tasks.dispatch import enqueue_publish

    cfg = state.settings
    try:
        enqueue_publish(ids, cfg)
    except Exception as exc:
        # The approvals are committed; `shotline run` picks approved shots up again.
        what = "failed" if cfg.embedded else "could not be enqueued"
        fail(f"approved, but publishing {what}: {type(exc).__name__}: {exc}", 1)
    if cfg.embedded:
        _report_published(state, ids)
    else:
        console.print(f"publishing enqueued for {len(ids)} shot(s)")


@review_app.command("approve")
def approve_cmd(
    ctx: typer.Context,
    shot_ids: list[int] | None = typer.Argument(
        None, metavar="ID...", show_default=False, min=1, max=MAX_ID
    ),
    all_pending: bool = typer.Option(False, "--all-pending", help="Every pending shot."),
    brand: str | None = BrandOpt,
    import_run: int | None = ImportRunOpt,
    template: str | None = TemplateOpt,
    reviewer: str | None = ReviewerOpt,
    reason: str | None = typer.Option(
        None, "--reason", "--note", help="Why; required with --override."
    ),
    override: bool = typer.Option(
        False, "--override", help="Approve shots the gate rejected (needs --reason)."
    ),
) -> None:
    """Approve shots (IDs, or --all-pending with filters); approved shots get published."""
    from catalog.review import approve, decide_pending

    state = cli_state(ctx)
    _check_selection(shot_ids, all_pending, brand, import_run, template)
    if all_pending:
        filters = {"brand": brand, "import_run": import_run, "template": template}
        ids, who = _apply(state, decide_pending, reviewer, note=reason, **filters)
        if not ids:
            console.print("nothing pending")
            return
    else:
        ids, who = _apply(
            state, approve, reviewer, list(shot_ids or []), note=reason, override=override
        )
    console.print(f"approved {len(ids)} shot(s) as {escape(who)}: {_id_list(ids)}")
    _publish(state, ids)


@review_app.command("reject")
def reject_cmd(
    ctx: typer.Context,
    shot_ids: list[int] | None = typer.Argument(
        None, metavar="ID...", show_default=False, min=1, max=MAX_ID
    ),
    all_pending: bool = typer.Option(False, "--all-pending", help="Every pending shot."),
    brand: str | None = BrandOpt,
    import_run: int | None = ImportRunOpt,
    template: str | None = TemplateOpt,
    reason: str | None = typer.Option(None, "--reason", help="Why (required)."),
    reviewer: str | None = ReviewerOpt,
) -> None:
    """Reject shots (IDs, or --all-pending with filters) awaiting review."""
    from catalog.review import decide_pending, reject

    state = cli_state(ctx)
    _check_selection(shot_ids, all_pending, brand, import_run, template)
    if all_pending:
        filters = {"brand": brand, "import_run": import_run, "template": template}
        ids, who = _apply(state, decide_pending, reviewer, rejecting=True, note=reason, **filters)
        if not ids:
            console.print("nothing pending")
            return
    else:
        ids, who = _apply(state, reject, reviewer, list(shot_ids or []), reason=reason)
    console.print(f"rejected {len(ids)} shot(s) as {escape(who)}: {_id_list(ids)}")


def _base_url(value: str | None) -> str | None:
    from pipeline.delivery.urls import PublicUrlError, check_base_url

    if value is None:
        return None
    try:
        return check_base_url(value)
    except PublicUrlError as exc:
        fail(str(exc))


@review_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="The CSV file to write."),
    brand: str | None = BrandOpt,
    status: str | None = typer.Option(None, "--status", help="Default: every review state."),
    import_run: int | None = ImportRunOpt,
    template: str | None = TemplateOpt,
) -> None:
    """The decisions as CSV, one row per shot; formula-like cells are escaped. Rows are
    written as they are read, a page of shots at a time. With SHOTLINE_PUBLIC_BASE_URL set,
    each published row carries its public URL."""
    from catalog.review import write_decisions_csv
    from pipeline.outputs import OutputPathError, write_output

    state = cli_state(ctx)
    base = _base_url(state.settings.public_base_url)
    with state.session() as s:
        filters = {
            "brand": brand,
            "status": _status(status, None),
            "import_run": import_run,
            "template": template,
        }
        rows: list[int] = []

        def fill(tmp: Path) -> None:
            rows.append(write_decisions_csv(s, tmp, base, **filters))

        try:
            write_output(out, fill)  # beside the target, then renamed; no links, no FIFOs
        except OutputPathError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{out}: cannot write: {exc.strerror or exc}")
        n = rows[0]
    console.print(f"wrote {n} row(s) to {escape(str(out))}", highlight=False, soft_wrap=True)


# --- browser review: serve, token, pick (tasks/cli/quality/review_web_cmd.py) --------------

review_app.command("serve")(review_web_cmd.serve_cmd)
review_app.command("pick")(review_web_cmd.pick_cmd)
review_app.add_typer(review_web_cmd.token_app, name="token")
