"""The embedded runtime: a drop-folder watcher and an HTTP host for `modelrepo.api`."""
