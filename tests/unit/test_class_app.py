"""The class's flags and the web app's idea of who a request is (no model, no server)."""

from __future__ import annotations

import pytest

from ui import app
from ui.common import key, tab


class Request:  # what Gradio hands a callback: a login, cookies, the tab's session hash
    def __init__(self, username=None, cookies=None, session_hash="tab00001"):
        self.username, self.cookies, self.session_hash = username, cookies or {}, session_hash


def test_a_request_is_its_login_else_its_browser_else_its_tab():
    bid = "0123456789abcdef0123456789abcdef"
    assert key(Request("ana", {"pp-browser": bid})) == "user:ana"
    assert key(Request(None, {"pp-browser": bid})) == f"browser:{bid}"
    assert key(Request(None, {"pp-browser": "../../x"})) == "tab00001"  # a malformed cookie: only this tab
    assert key(Request()) == "tab00001" and tab(Request()) == "tab00001"
    assert key(None) == "local"


def test_teacher_logins_join_the_login_page_only_with_student_logins(tmp_path):
    base = ["--library", str(tmp_path / "lib")]
    open_class = app.parse_args([*base, "--teacher-auth", "ms-t:chalk"])
    assert open_class.teachers == {"ms-t": "chalk"} and open_class.logins == []  # students type their names
    (tmp_path / "students.txt").write_text("ana:a1\nben:b2\n")
    (tmp_path / "teacher.txt").write_text("# the teacher\nms-t:chalk\n")
    logins = app.parse_args([*base, "--auth-file", str(tmp_path / "students.txt"), "--teacher-auth-file",
                             str(tmp_path / "teacher.txt")])
    assert logins.teachers == {"ms-t": "chalk"} and ("ms-t", "chalk") in logins.logins and len(logins.logins) == 3
    (tmp_path / "empty.txt").write_text("# nobody\n")
    with pytest.raises(SystemExit):
        app.parse_args([*base, "--teacher-auth-file", str(tmp_path / "empty.txt")])
    with pytest.raises(SystemExit):  # the teacher's name is a student's
        app.parse_args([*base, "--auth", "ms-t:x", "--teacher-auth", "ms-t:chalk"])
    with pytest.raises(SystemExit):
        app.parse_args([*base, "--teacher-auth", "no-password"])
