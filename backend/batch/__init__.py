"""``dreamstill batch``: many prompts into many assets, on a running server or on a Ray cluster, and one scene.

- ``prompts``: the one prompt-file parser and the result names (``NNN_words_of_the_prompt.fmt``).
- ``items``, ``results``: one item per prompt; results written whole and recorded, so a rerun skips what is done.
- ``server_runner``: queue every prompt on ``dreamstill serve`` and fetch the results (re-attaching on a rerun).
- ``ray_runner``: one Ray task per prompt running the engine's ``run_job``; lost workers retried.
- ``sheet``: the contact sheet; ``layout`` and ``scene`` (+ ``blend_scene``): every asset on a grid in one .usda/.blend.
- ``commands``: the argparse command that ties them together.

Nothing here is imported by the rest of the backend; this package imports the server's client helpers, the engine
and the mesh writers.
"""
