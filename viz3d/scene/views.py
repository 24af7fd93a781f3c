"""The camera presets' names, importable without numpy (the command line's ``--help`` stays fast)."""

VIEWS = ("anterior", "posterior", "left", "right", "superior", "inferior", "iso")
SHEET_VIEWS = ("anterior", "left", "posterior", "right")  # a QC sheet's panels unless asked otherwise
