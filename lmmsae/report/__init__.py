"""The report: a static site under runs/<name>/report/ that works from file:// (no server, no network).

data.py gathers what a run holds (metrics, curves, scores, explanations, feature statistics, steering);
images.py draws each feature's top images (mask / heatmap / crop / image) as small PNG files; svg.py
draws the plots as inline SVG; html.py escapes and lays out pages; index.py, feature.py, run_page.py
and compare.py write the pages; assets/ holds the one stylesheet and script; build.py puts it
together. Nothing here imports torch at import time.
"""
