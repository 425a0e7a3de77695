"""Stream processing: pure cleaning/normalising/windowing functions and the thin batch pipeline around them."""
