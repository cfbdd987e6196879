"""The core's commands, one module per area, each a function over a `modelrepo.unit_of_work.Context`.

Commands that change state run in a unit of work (`unit_of_work.execute`), so each change is one
atomic write with its event and audit entry; queries read the stores directly.
"""
