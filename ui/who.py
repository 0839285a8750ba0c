"""Who is at this page: the learner's name in the class, and the teacher's sign-in.

With student logins the name is the login. Without them a learner types the name the class
sees; it belongs to this browser (a cookie), so a reload or a second tab keeps it. The teacher
signs in here with the ``--teacher-auth`` login when the students have no logins of their own.
"""

from dataclasses import dataclass

import gradio as gr

from playground.service import Playground

from .common import esc, friendly, key, tab


@dataclass
class Who:
    show: object  # (request) -> (badge, name box) of this page's learner
    outputs: list
    teacher_changed: object  # the event that fires when this page signs in as the teacher


def badge(pg: Playground, k: str) -> str:
    name = pg.name(k)
    role = " · <b>the teacher</b>" if pg.is_teacher(k) else ""
    if k.startswith("user:"):
        return f'<span id="who-name" data-name="{esc(name)}">Logged in as <b>{esc(name)}</b>{role}</span>'
    if not pg.roster.has_name(k):
        if role:
            return '<span id="who-name" data-name="">Signed in as <b>the teacher</b></span>'
        return ('<span id="who-name" data-name="">Type your name, so the class (and you, after a reload) '
                'can find your runs.</span>')
    return f'<span id="who-name" data-name="{esc(name)}">You are <b>{esc(name)}</b>{role}</span>'


def build(pg: Playground) -> Who:
    with gr.Row(elem_id="who"):
        who = gr.HTML(elem_id="who-badge")
        name = gr.Textbox(label="Your name in the class", placeholder="e.g. Alex B.", max_lines=1, scale=2,
                          elem_id="my-name")
        use = gr.Button("Use this name", scale=0, elem_id="name-btn")
        with gr.Accordion("Teacher", open=False, visible=pg.roster.has_teacher, elem_id="teacher-signin") as acc:
            with gr.Row():
                user = gr.Textbox(label="Teacher's login", max_lines=1, elem_id="teacher-user")
                password = gr.Textbox(label="Password", type="password", max_lines=1, elem_id="teacher-pass")
                sign = gr.Button("Sign in", scale=0, elem_id="teacher-btn")

    def show(request: gr.Request):
        k = key(request)
        pg.attach(k, tab(request))  # this page follows the learner's runs, whatever tab they started in
        login = k.startswith("user:")
        teacher = pg.is_teacher(k)
        return (badge(pg, k), gr.update(value=pg.name(k) if pg.roster.has_name(k) else "", visible=not login),
                gr.update(visible=not login), gr.update(visible=pg.roster.has_teacher and not teacher))

    @friendly
    def on_name(text, request: gr.Request):
        k = key(request)
        got = pg.set_name(k, text)
        gr.Info(f"The class now sees you as {got}.")
        return badge(pg, k)

    # queued (not queue=False): a refusal shows as the page's error message
    use.click(on_name, name, who)
    name.submit(on_name, name, who)

    @friendly
    def on_sign(u, p, request: gr.Request):
        k = key(request)
        pg.teacher_sign_in(k, u, p)
        gr.Info("Signed in as the teacher: the Class tab is open.")
        return badge(pg, k), "", gr.update(visible=False)

    signed = sign.click(on_sign, [user, password], [who, password, acc], api_name="teacher_sign_in")
    return Who(show, [who, name, use, acc], signed)
