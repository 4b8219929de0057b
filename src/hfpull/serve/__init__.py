"""hfpull serve: a caching Hub mirror (aiohttp; ``pip install 'hfpull[serve]'``)."""
