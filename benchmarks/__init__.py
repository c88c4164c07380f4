"""optionsfeed's benchmarks: the figures of docs/benchmarks.md and the code that makes them.

They live outside the package (a source checkout's `benchmarks/`, not the wheel), so
the product ships without the load generator and the fake venues. Run them from the
checkout's root, with the `bench` extra installed (picows, websockets):

    python -m benchmarks venues --runs 1
    optionsfeed bench venues --runs 1      # the same, through the package's command

`cli.py` holds the command line (`__main__.py` runs it); each other module is one
bench. They import the package (`optionsfeed`) and the venue fakes (`tests.fakes`,
shared with the tests); the package never imports them, except the one lazy import
in `optionsfeed bench` (optionsfeed/cli.py, `_bench`).
"""
