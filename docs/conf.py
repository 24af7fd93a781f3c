"""Sphinx configuration: viz3d's guide pages (Markdown, through MyST) and its API reference, built
from the numpydoc docstrings. `.ci/run` builds it with warnings as errors:
``python -m sphinx -W --keep-going -b html docs docs/_build``."""
project = "viz3d"
author = "viz3d developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_typehints = "none"  # the numpydoc Parameters sections say the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc's checks, run on every docstring the reference shows: with -W a docstring that loses a
# section fails the build. Completeness: every parameter documented (PR01) and no unknown one (PR02),
# a Returns section (RT01) with a description (RT03), Yields for generators (YD01), an Examples
# section (EX01), a docstring at all (GL08), each parameter typed (PR04) and described (PR07).
# Form: one-line summary (SS01-SS06), section order and layout (GL01-GL03, GL05-GL07, GL09, GL10),
# parameters in the signature's order (PR03) with numpydoc's spelling (PR05, PR06, PR08-PR10),
# Returns entries (RT02, RT04, RT05), See Also entries (SA02-SA04). Left out: an extended summary
# (ES01) and a See Also section (SA01) on every entry.
numpydoc_validation_checks = {
    "PR01", "PR02", "RT01", "RT03", "YD01", "EX01", "GL08", "PR04", "PR07",
    "SS01", "SS02", "SS03", "SS04", "SS05", "SS06",
    "GL01", "GL02", "GL03", "GL05", "GL06", "GL07", "GL09", "GL10",
    "PR03", "PR05", "PR06", "PR08", "PR09", "PR10", "RT02", "RT04", "RT05", "SA02", "SA03", "SA04",
}
default_role = "py:obj"  # `name` in docstrings links to the object, as in numpy's and nibabel's docs
nitpicky = False
myst_heading_anchors = 3
html_theme = "alabaster"
html_static_path = []
