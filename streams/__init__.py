"""Stream processing: pure cleaning/normalising/windowing functions and the thin Faust agents around them."""
