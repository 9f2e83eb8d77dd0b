"""``shotline recall ASSET... --reason TEXT``: take published assets out of every later export.

Select by asset id, ``--shot`` or ``--lora NAME[@SHA256]``. The event is append-only and names
the authenticated user; ``--delete-objects`` also deletes the master and its renditions from
the blob store (after the recall is committed, so a failed delete never leaves an asset in
the exports). Lineage and ``verify`` on a recalled file say when, by whom and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from tasks.cli.common import MAX_ID, cli_state, console, err_console, fail, print_json

if TYPE_CHECKING:
    pass


def _lora(value: str | None) -> tuple[str, str | None] | None:
    if value is None:
        return None
    name, _, sha = value.partition("@")
    if not name:
        fail(f"--lora {value!r}: give NAME or NAME@SHA256")
    return name, (sha.lower() or None)


def recall_command(
    ctx: typer.Context,
    assets: list[int] = typer.Argument(None, min=1, max=MAX_ID, help="Asset ids."),
    reason: str = typer.Option(..., "--reason", help="Why (kept with the event)."),
    shot: list[int] = typer.Option(
        None, "--shot", min=1, max=MAX_ID, help="The published asset of this shot (repeat)."
    ),
    lora: str | None = typer.Option(
        None, "--lora", metavar="NAME[@SHA256]", help="Every asset made with this LoRA."
    ),
    delete_objects: bool = typer.Option(
        False, "--delete-objects", help="Also delete the master and its renditions."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recall published assets: no later export lists them."""
    from catalog.delivery.recall import RecallError, recall, select_assets

    state = cli_state(ctx)
    if not reason.strip():
        fail("--reason must not be empty")
    if not (assets or shot or lora):
        fail("name assets to recall: ASSET ids, --shot or --lora")
    selector: dict[str, Any] = {"assets": assets or [], "shots": shot or [], "lora": lora}
    with state.session() as s:
        try:
            ids = select_assets(s, assets or [], shot or [], _lora(lora))
        except RecallError as exc:
            fail(str(exc))
        res = recall(s, ids, reason.strip(), selector, delete_objects=delete_objects)
    failed = _delete(state, res.keys) if delete_objects else []
    out = {"recalled": res.recalled, "already_recalled": res.already, "by": res.by}
    out["delete_failed"] = failed
    if as_json:
        print_json(out)
    else:
        console.print(
            f"recalled {len(res.recalled)} asset(s) as {res.by}"
            + (f"; {len(res.already)} were already recalled" if res.already else ""),
            markup=False,
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


def _delete(state: Any, keys: dict[int, list[str]]) -> list[str]:
    from pipeline.storage import StorageError, make_blob_store

    store = make_blob_store(state.settings)
    failed = []
    for key in [k for ks in keys.values() for k in ks]:
        try:
            store.delete(key)
        except FileNotFoundError:
            pass
        except StorageError as exc:
            failed.append(key)
            err_console.print(f"warning: {key}: not deleted: {exc}", markup=False)
    return failed
