"""Sphinx configuration of the offline course site; `make docs` (tools/build_site.py) stages it beside the notebooks."""
project = "foundation_course"
author = "foundation_course contributors"
copyright = "foundation_course contributors"

extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"  # chapters show their committed cpu-profile outputs; the build executes index.ipynb itself
nb_merge_streams = True
nb_render_markdown_format = "myst"  # markdown outputs (the chapter table, show_doc) get tables like the cells do
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# Widget outputs (tqdm) fall back to text; show_doc of a method is an H4 right under an H2.
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_title = "foundation_course"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_show_sourcelink = False
html_copy_source = False
html_context = {"default_mode": "light"}  # an explicit mode; an empty one logs a console error
html_theme_options = {
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}

# MathJax 3 is bundled (copied to _static/mathjax by the build), never fetched.
mathjax_path = "mathjax/tex-chtml.js"
