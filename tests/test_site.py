"""The course site: built offline, warnings as errors, read in Debian's Chromium."""

import functools
import http.server
import importlib
import inspect
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import NBS, ROOT, load_module
from helpers_browser import ARTIFACTS, chromium

SITE_PAGES_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built by the same command as `make docs`."
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_site.py"), "site", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    "A static file server for the site on 127.0.0.1, on a free port."
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _numbered() -> list[str]:
    return [p.stem for p in sorted(NBS.glob("[0-9][0-9]_*.ipynb"))]


def _source_figures(name: str) -> int:
    "How many image outputs the committed notebook has."
    cells = json.loads((NBS / f"{name}.ipynb").read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def _source_has_math(name: str) -> bool:
    cells = json.loads((NBS / f"{name}.ipynb").read_text())["cells"]
    return any(
        re.search(r"\$[^$\n]+\$", "".join(c["source"]))
        for c in cells
        if c["cell_type"] == "markdown"
    )


@pytest.fixture(scope="module")
def visits(site, server):
    "Every page, visited once: what it requested, what failed, what it logged, what it shows."
    pages = sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts
    )  # _static: theme templates
    found = {}
    with chromium() as browser:
        for rel in pages:
            page = browser.new_page()
            record = dict(requests=[], failed=[], errors=[])
            page.on("request", lambda r, rec=record: rec["requests"].append(r.url))
            page.on(
                "requestfailed", lambda r, rec=record: rec["failed"].append(f"{r.url} {r.failure}")
            )
            page.on(
                "response",
                lambda r, rec=record: (
                    r.status >= 400 and rec["failed"].append(f"{r.url} HTTP {r.status}")
                ),
            )
            page.on(
                "console", lambda m, rec=record: m.type == "error" and rec["errors"].append(m.text)
            )
            page.on("pageerror", lambda e, rec=record: rec["errors"].append(str(e)))
            page.goto(server + rel, wait_until="networkidle", timeout=SITE_PAGES_TIMEOUT_MS)
            if page.locator(".math").count():
                page.wait_for_function(
                    "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                    timeout=SITE_PAGES_TIMEOUT_MS,
                )
                page.evaluate("() => MathJax.startup.promise")
            record["images"] = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({src: e.currentSrc, ok: e.complete && e.naturalWidth > 0}))",
            )
            record["math_rendered"] = page.locator("mjx-container").count()
            record["math_errors"] = page.locator("mjx-merror").count()
            record["raw_tex"] = (
                "\\(" in page.inner_text("article") if page.locator("article").count() else False
            )
            record["links"] = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            record["ids"] = page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
            record["table_headers"] = page.eval_on_selector_all(
                "table",
                "els => els.map(t => [...t.querySelectorAll('th')].map(th => th.innerText.trim()))",
            )
            record["text"] = page.inner_text("body")
            record["outputs"] = "\n".join(
                page.eval_on_selector_all(".cell_output", "els => els.map(e => e.innerText)")
            )
            if rel in ("index.html", "02_training.html"):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"site-{Path(rel).stem}.png"), full_page=True)
            found[rel] = record
            page.close()
    return found


def test_every_notebook_has_a_page_and_chapters_link_previous_next(site, visits):
    names = _numbered()
    assert {"index.html", "search.html", "glossary.html", *(f"{n}.html" for n in names)} <= set(
        visits
    )
    order = ["index", *names]
    for prev, page, nxt in zip(order, order[1:], order[2:] + [None]):
        links = [urlparse(u).path.rsplit("/", 1)[-1] for u in visits[f"{page}.html"]["links"]]
        assert f"{prev}.html" in links, f"{page} has no link back to {prev}"
        if nxt:
            assert f"{nxt}.html" in links, f"{page} has no link on to {nxt}"


def test_pages_load_without_console_errors_or_failed_requests(visits):
    for rel, rec in visits.items():
        assert not rec["errors"], f"{rel} logged errors: {rec['errors'][:5]}"
        assert not rec["failed"], f"{rel} had failed requests: {rec['failed'][:5]}"


def test_no_request_leaves_localhost(visits, server):
    for rel, rec in visits.items():
        assert rec["requests"], f"{rel} made no request at all"
        outside = [
            u
            for u in rec["requests"]
            if not (u.startswith(server) or u.startswith("data:") or u.startswith("blob:"))
        ]
        assert not outside, f"{rel} requested {outside[:5]}"


def test_figures_are_present_and_decoded(visits):
    for rel, rec in visits.items():
        broken = [i["src"][:80] for i in rec["images"] if not i["ok"]]
        assert not broken, f"{rel} has images that did not decode: {broken}"
    for name in ["index", *_numbered()]:
        expected = _source_figures(name) if name != "index" else 1  # the landing page's chapter map
        shown = sum(i["ok"] for i in visits[f"{name}.html"]["images"])
        assert shown >= expected, (
            f"{name}: {shown} decoded images, the notebook has {expected} figures"
        )


def test_math_is_rendered(visits):
    with_math = [n for n in _numbered() if _source_has_math(n)]
    assert with_math, "no chapter has math in its markdown"
    for name in with_math:
        rec = visits[f"{name}.html"]
        assert rec["math_rendered"] > 0, f"{name}: math was not typeset"
        assert rec["math_errors"] == 0, f"{name}: MathJax reported {rec['math_errors']} errors"
        assert not rec["raw_tex"], f"{name}: raw TeX delimiters are left on the page"


def test_chapter_pages_show_api_reference_and_outputs(visits):
    rec = visits["02_training.html"]
    assert "def fit(" in rec["outputs"], "the show_doc signature of fit is missing"
    assert "GFLOP/s" in visits["00_core.html"]["outputs"], (
        "the committed cpu-run outputs of 00_core are missing"
    )
    for name in _numbered():
        assert "{target=" not in visits[f"{name}.html"]["text"], (
            f"{name}: Quarto link attributes leaked into the page"
        )


def _exported_functions_and_classes(name: str) -> list[str]:
    "The functions and classes the notebook's `#| default_exp` module exports."
    cells = json.loads((NBS / f"{name}.ipynb").read_text())["cells"]
    found = re.search(
        r"^#\|\s*default_exp\s+(\S+)", "\n".join("".join(c["source"]) for c in cells), re.M
    )
    if not found:
        return []
    module = importlib.import_module(f"foundation_course.{found[1]}")
    return [
        n
        for n in module.__all__
        if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))
    ]


def test_every_exported_function_and_class_has_its_api_reference(visits):
    for name in _numbered():
        outputs = visits[f"{name}.html"]["outputs"]
        missing = [
            n
            for n in _exported_functions_and_classes(name)
            if not re.search(rf"\b(def|class) {n}\b", outputs)
        ]
        assert not missing, f"{name}: no show_doc reference for {missing}"


def test_landing_page_has_map_commands_chapters_and_results(visits):
    text = visits["index.html"]["text"]
    assert "make course" in text and "make test" in text
    for name in _numbered():
        assert f"{name}.html" in [
            urlparse(u).path.rsplit("/", 1)[-1] for u in visits["index.html"]["links"]
        ]
    assert "capstone" in text and "13_end_to_end.html" in [
        urlparse(u).path.rsplit("/", 1)[-1] for u in visits["index.html"]["links"]
    ]
    headers = [h[:6] for h in visits["index.html"]["table_headers"]]
    assert ["chapter", "data set", "method", "metric", "baseline", "cpu"] in headers, (
        f"the headline results table is missing; tables: {headers}"
    )


def test_no_internal_link_is_broken(visits, server):
    known = {server + rel: rec for rel, rec in visits.items()}
    known[server] = visits["index.html"]
    for rel, rec in visits.items():
        for link in rec["links"]:
            if not link.startswith(server):
                continue
            target, _, anchor = link.partition("#")
            target = target.split("?")[0]
            assert target in known or Path(urlparse(target).path).suffix not in ("", ".html"), (
                f"{rel} links to missing {link}"
            )
            if target in known and anchor:
                assert anchor in known[target]["ids"], (
                    f"{rel} links to {link}, which has no #{anchor}"
                )


def _search(browser, server, term: str) -> list[str]:
    page = browser.new_page()
    page.goto(f"{server}search.html?q={term}", wait_until="networkidle")
    page.wait_for_selector("#search-results .search-summary", timeout=SITE_PAGES_TIMEOUT_MS)
    hrefs = page.eval_on_selector_all("#search-results ul.search a", "els => els.map(e => e.href)")
    page.close()
    return [urlparse(h).path.rsplit("/", 1)[-1] for h in hrefs]


def _build_site_module():
    return load_module(ROOT / "tools" / "build_site.py")


def test_solution_toggle_follows_each_exercise_cell():
    build = _build_site_module()
    stub = dict(
        cell_type="code",
        metadata={"tags": ["exercise"]},
        outputs=[],
        source='def double(x):\n    "Twice x."\n    raise NotImplementedError("Hint: add")',
    )
    nb = dict(
        cells=[stub, dict(cell_type="code", metadata={}, outputs=[], source="check_double(double)")]
    )
    build.add_solution_toggles(nb, "99_missing")
    assert len(nb["cells"]) == 2, "a chapter without a solutions file got a toggle"
    cell = build.solution_cell(
        ["double"], {"double": 'def double(x):\n    "Twice x."\n\n    return 2 * x'}
    )
    assert cell["source"].startswith('<details class="solution">\n<summary>Show solution</summary>')
    assert "```python\ndef double(x):" in cell["source"] and cell["source"].endswith("</details>")


def test_gpu_results_close_the_chapter_page_where_recorded(tmp_path):
    build = _build_site_module()
    for profile, acc, device in (("cpu", 0.81, "cpu"), ("gpu", 0.87, "cuda")):
        (tmp_path / profile).mkdir()
        record = dict(
            chapter="09_lora_peft",
            profile=profile,
            device=device,
            elapsed_s=1.0,
            saved_at="now",
            metrics=dict(acc=acc),
        )
        (tmp_path / profile / "09_lora_peft.json").write_text(json.dumps(record))
    assert build.gpu_results_cell("08_adapters", tmp_path) is None
    text = build.gpu_results_cell("09_lora_peft", tmp_path)["source"]
    assert text.startswith("## At the gpu profile") and "on cuda" in text
    assert re.search(r"^    acc +0\.81 +0\.87$", text, re.M), text


def _chapters_with_solutions() -> list[str]:
    return [n for n in _numbered() if (NBS / "solutions" / f"ch{n}.py").exists()]


def _html_tables(name: str) -> int:
    cells = json.loads((NBS / f"{name}.ipynb").read_text())["cells"]
    return sum(
        "<table" in "".join(o.get("data", {}).get("text/html", ""))
        for c in cells
        for o in c.get("outputs", [])
    )


def test_chapter_page_shows_figures_tables_and_a_solution_toggle(server):
    with_solutions = _chapters_with_solutions()
    if not with_solutions:
        pytest.skip("no chapter has nbs/solutions/ch<chapter>.py yet")
    name = max(with_solutions, key=lambda n: (_html_tables(n) > 0, _source_figures(n)))
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{server}{name}.html", wait_until="networkidle", timeout=SITE_PAGES_TIMEOUT_MS)
        figures = page.eval_on_selector_all(
            "article img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length"
        )
        tables = page.locator("article .cell_output table").count()
        toggle = page.locator("details.solution").first
        assert page.locator("details.solution").count() >= 1, f"{name}: no solution toggle"
        code = toggle.locator("pre")
        assert not code.is_visible(), f"{name}: the solution shows before it is asked for"
        toggle.locator("summary").click()
        assert code.is_visible() and "def " in code.inner_text(), (
            f"{name}: the toggle did not reveal the solution"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"site-{name}-solution.png"), full_page=True)
        page.close()
    assert figures >= _source_figures(name), (
        f"{name}: {figures} figures decoded, the notebook has {_source_figures(name)}"
    )
    assert tables >= min(_html_tables(name), 1), (
        f"{name}: its DataFrame tables did not render as tables"
    )


def test_full_text_search_finds_chapters(server):
    peft = [p.stem for p in NBS.glob("[0-9][0-9]_*.ipynb") if re.search(r"lora|peft", p.stem)]
    with chromium() as browser:
        assert "02_training.html" in _search(browser, server, "AdamW")
        lora = _search(browser, server, "LoRA")
        for term in ("fbgemm", "oneDNN", "gloo", "ECE"):
            assert "glossary.html" in _search(browser, server, term), (
                f"search for {term} misses the glossary"
            )
    assert "index.html" in lora, "the landing page mentions LoRA, and search missed it"
    for name in peft:
        assert f"{name}.html" in lora, f"a search for LoRA did not find the PEFT chapter {name}"
