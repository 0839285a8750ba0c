"""The Library tab: list, inspect, upload, download, rename and delete prefixes."""


import gradio as gr

from playground.report import library_rows
from playground.service import Playground

from .common import asset, esc, friendly, owner

HEADERS = ["name", "task", "virtual tokens", "metric", "prefix", "instruction", "base", "base model", "owner",
           "saved"]


def build(pg: Playground):
    gr.Markdown(asset("library.md"))
    table = gr.Dataframe(library_rows(pg.library) or None, headers=HEADERS, interactive=False, wrap=True,
                         label="Prefixes (held-out metric of the prefix, the instruction prompt and the base model)",
                         elem_id="lib-table")
    with gr.Row():
        pick = gr.Dropdown(pg.library.names(), label="Prefix", elem_id="lib-pick", scale=2)
        refresh_btn = gr.Button("Refresh", scale=1)
        download = gr.DownloadButton("Download zip", value=None, scale=1, elem_id="lib-download")
    details = gr.JSON(label="Card, PEFT config and files", elem_id="lib-details")
    with gr.Row():
        new_name = gr.Textbox(label="New name", scale=3)
        rename_btn = gr.Button("Rename", scale=1)
        delete_btn = gr.Button("Delete", variant="stop", scale=1, elem_id="lib-delete")
    with gr.Accordion("Upload a PEFT prefix", open=False):
        files = gr.File(label="A zip of the folder, or adapter_config.json + adapter_model.safetensors (+ card.json)",
                        file_count="multiple", file_types=[".zip", ".json", ".safetensors", ".bin"],
                        elem_id="lib-upload")
        with gr.Row():
            up_name = gr.Textbox(label="Name in the library (default: the folder's name)", scale=3)
            up_over = gr.Checkbox(label="Overwrite", value=False, scale=1)
            up_btn = gr.Button("Import", variant="primary", scale=1, elem_id="lib-import")
    status = gr.Markdown(elem_id="lib-status")

    def listing(selected, request: gr.Request):
        names = pg.library.names()
        value = selected if selected in names else (names[0] if names else None)
        return library_rows(pg.library, owner(request)) or None, gr.update(choices=names, value=value)

    @friendly
    def on_pick(name):
        if not name:
            return None, gr.update(value=None)
        return pg.inspect(name), gr.update(value=str(pg.export(name)))

    pick.change(on_pick, pick, [details, download])
    refresh_btn.click(listing, pick, [table, pick])

    # Each action writes only its status line; the listing refreshes on success. So an error
    # marks the status line alone, not the table and picker too.
    @friendly
    def on_rename(old, new, request: gr.Request):
        if not old:
            raise gr.Error("Pick a prefix to rename.")
        pg.rename(old, new or "", owner=owner(request))
        return f"Renamed **{esc(old)}** to **{esc(new.strip())}**."

    def renamed(new, request: gr.Request):  # gr.Request reaches only annotated parameters: no lambdas here
        return listing((new or "").strip(), request)

    rename_btn.click(on_rename, [pick, new_name], status).success(renamed, new_name, [table, pick])

    @friendly
    def on_delete(name, request: gr.Request):
        if not name:
            raise gr.Error("Pick a prefix to delete.")
        pg.delete(name, owner=owner(request))
        return f"Deleted **{esc(name)}**."

    def deleted(request: gr.Request):
        return listing(None, request)

    delete_btn.click(on_delete, pick, status).success(deleted, None, [table, pick])

    @friendly
    def on_import(paths, name, over, request: gr.Request):
        got = pg.import_upload(paths or [], name or "", bool(over), owner=owner(request))
        return got, f"Imported **{esc(got)}**: it fits the loaded model and is now in the library."

    imported = gr.State("")
    up_btn.click(on_import, [files, up_name, up_over], [imported, status], concurrency_id="infer").success(
        listing, imported, [table, pick])

    def refresh(selected, request: gr.Request):
        return listing(selected, request)

    return refresh, [pick], [table, pick]
