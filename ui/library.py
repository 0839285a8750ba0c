"""The Library tab: list, inspect, upload, download, rename and delete prefixes.

Deleting, and importing over an existing name, ask first: the first click holds the name in
the session's state and shows a confirmation naming it; only its button changes the library.
After a delete nothing is picked, so no further click can reach another prefix.
"""


import gradio as gr

from playground.library import NameTaken
from playground.report import LIBRARY_HEADERS, card_scores, library_rows
from playground.service import Playground

from .common import asset, editor, esc, friendly, owner


def visible(on: bool) -> dict:
    """A fresh update each time: gradio edits the update dicts it is handed."""
    return gr.update(visible=on)


# Set widths (in LIBRARY_HEADERS' order, the scores widest) keep eleven columns on a 1280 px screen, no sideways scroll.
LIBRARY_WIDTHS = ["9%", "13%", "11%", "11%", "8%", "8%", "8%", "7%", "9%", "8%", "8%"]


def build(pg: Playground):
    gr.Markdown(asset("library.md"))
    table = gr.Dataframe(library_rows(pg.library) or None, headers=LIBRARY_HEADERS, interactive=False, wrap=True,
                         label="Prefixes: each score with the held-out set (split and n) it was measured on, and its "
                               "95% interval", elem_id="lib-table", column_widths=LIBRARY_WIDTHS)
    with gr.Row():
        pick = gr.Dropdown(pg.library.names(), label="Prefix", elem_id="lib-pick", scale=2)
        refresh_btn = gr.Button("Refresh", scale=1)
        download = gr.DownloadButton("Download zip", value=None, scale=1, elem_id="lib-download")
    scores = gr.Markdown(elem_id="lib-scores")
    details = gr.JSON(label="Card, PEFT config and files", elem_id="lib-details")
    with gr.Row():
        new_name = gr.Textbox(label="New name", scale=3)
        rename_btn = gr.Button("Rename", scale=1)
        delete_btn = gr.Button("Delete", variant="stop", scale=1, elem_id="lib-delete")
    with gr.Row(visible=False, elem_id="lib-delete-confirm") as del_row:
        del_ask = gr.Markdown()
        del_yes = gr.Button("Yes, delete", variant="stop", scale=0, elem_id="lib-delete-yes")
        del_no = gr.Button("Cancel", scale=0, elem_id="lib-delete-cancel")
    with gr.Accordion("Upload a PEFT prefix", open=False):
        files = gr.File(label="A zip of the folder, or adapter_config.json + adapter_model.safetensors (+ card.json)",
                        file_count="multiple", file_types=[".zip", ".json", ".safetensors", ".bin"],
                        elem_id="lib-upload")
        with gr.Row():
            up_name = gr.Textbox(label="Name in the library (default: the folder's name)", scale=3)
            up_over = gr.Checkbox(label="Overwrite", value=False, scale=1, elem_id="lib-overwrite")
            up_btn = gr.Button("Import", variant="primary", scale=1, elem_id="lib-import")
        with gr.Row(visible=False, elem_id="lib-import-confirm") as imp_row:
            imp_ask = gr.Markdown()
            imp_yes = gr.Button("Yes, overwrite", variant="stop", scale=0, elem_id="lib-import-yes")
            imp_no = gr.Button("Cancel", scale=0, elem_id="lib-import-cancel")
    status = gr.Markdown(elem_id="lib-status")
    del_pending = gr.State(None)  # the name to delete, held from the first click
    imp_pending = gr.State(None)  # {"name", "paths"} of an import that would overwrite, held from the first click
    imported = gr.State("")
    shown = [table, pick, scores, details, download]

    def view(name):
        """The scores, the card and the download of ``name``; all empty when nothing is picked."""
        if not name or name not in pg.library.names():
            return "", None, gr.update(value=None)
        info = pg.inspect(name)
        return card_scores(info["card"]), info, gr.update(value=str(pg.export(name)))

    @friendly
    def listing(selected, request: gr.Request):
        names = pg.library.names()
        value = selected if selected in names else None
        return (library_rows(pg.library, owner(request)) or None, gr.update(choices=names, value=value),
                *view(value))

    pick.change(friendly(view), pick, [scores, details, download])
    pick.input(lambda: (None, visible(False), None, visible(False)), None,
               [del_pending, del_row, imp_pending, imp_row], queue=False)  # a new pick drops a pending question
    refresh_btn.click(listing, pick, shown)

    # Each action writes only its status line; the listing refreshes on success. So an error
    # marks the status line alone, not the table and picker too.
    @friendly
    def on_rename(old, new, request: gr.Request):
        if not old:
            raise gr.Error("Pick a prefix to rename.")
        if not (new or "").strip():
            raise gr.Error("Type the new name, such as my-sentiment.")
        pg.rename(old, new or "", owner=editor(pg, request))
        return f"Renamed **{esc(old)}** to **{esc(new.strip())}**."

    def renamed(new, request: gr.Request):  # gr.Request reaches only annotated parameters: no lambdas here
        return listing((new or "").strip(), request)

    rename_btn.click(on_rename, [pick, new_name], status).success(renamed, new_name, shown)

    @friendly
    def ask_delete(name, request: gr.Request):
        if not name:
            raise gr.Error("Pick a prefix to delete.")
        pg.library.check_change(name, editor(pg, request))  # a refusal now, not after the confirmation
        return (name, visible(True), f"Delete **{esc(name)}** for good? This cannot be undone.",
                gr.update(value=f"Yes, delete {name}"), "")

    delete_btn.click(ask_delete, pick, [del_pending, del_row, del_ask, del_yes, status])

    @friendly
    def on_delete(name, request: gr.Request):
        if not name:  # already done (a second click on the confirmation)
            return None, visible(False), gr.skip()
        if name not in pg.library.names():
            return None, visible(False), f"**{esc(name)}** is no longer in the library."
        pg.delete(name, owner=editor(pg, request))
        return None, visible(False), f"Deleted **{esc(name)}**."

    def deleted(request: gr.Request):
        return listing(None, request)  # nothing picked: a further click on Delete reaches no other prefix

    del_yes.click(on_delete, del_pending, [del_pending, del_row, status]).success(deleted, None, shown)
    del_no.click(lambda: (None, visible(False), "Nothing was deleted."), None, [del_pending, del_row, status],
                 queue=False)

    @friendly
    def on_import(paths, name, over, current, request: gr.Request):
        try:
            got = pg.import_upload(paths or [], name or "", False, owner=owner(request))
        except NameTaken as taken:  # the upload is fine and the name is the importer's to overwrite: ask first
            if not over:
                raise
            return (current, f"**{esc(taken.name)}** already exists: confirm below to replace it.",
                    {"name": taken.name, "paths": list(paths)}, visible(True),
                    f"Replace **{esc(taken.name)}** with the upload? The prefix now under that name is lost.",
                    gr.update(value=f"Yes, overwrite {taken.name}"))
        return got, imported_message(got), None, visible(False), gr.skip(), gr.skip()

    def imported_message(name: str) -> str:
        return f"Imported **{esc(name)}**: it fits the loaded model and is now in the library."

    @friendly
    def on_overwrite(held, request: gr.Request):
        if not held:  # already done
            return gr.skip(), gr.skip(), None, visible(False)
        got = pg.import_upload(held["paths"], held["name"], True, owner=owner(request))
        return got, imported_message(got) + " It replaced the previous one.", None, visible(False)

    def after_import(got, current, request: gr.Request):
        return listing(got or current, request)

    up_btn.click(on_import, [files, up_name, up_over, pick], [imported, status, imp_pending, imp_row, imp_ask, imp_yes],
                 concurrency_id="infer").success(after_import, [imported, pick], shown)
    imp_yes.click(on_overwrite, imp_pending, [imported, status, imp_pending, imp_row],
                  concurrency_id="infer").success(after_import, [imported, pick], shown)
    imp_no.click(lambda: (None, visible(False), "Nothing was imported."), None, [imp_pending, imp_row, status],
                 queue=False)

    def refresh(selected, request: gr.Request):
        return listing(selected, request)

    return refresh, [pick], shown
