"""Outputs: pictures (screenshots, sheets, turntables, 2-D slices), the web view and HTML export,
notebooks, and mesh files with their manifest. The last stage: nothing upstream imports them."""
