"""The look shared by the HTML reports for records managers and auditors (retention reviews,
DR drills): self-contained pages, no scripts, readable printed."""

BASE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 75em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; gap: 2em; flex-wrap: wrap; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: .8em 1.2em; }
.figure b { display: block; font-size: 1.6em; }
.muted { color: #666; }
@media print { body { margin: 0; } }
"""
