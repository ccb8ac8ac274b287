"""The analysts' views: installed as the package `pipelines.sql` (see pyproject.toml), which
`pipelines.views` reads with importlib.resources, so a `pip install .` has them too."""
