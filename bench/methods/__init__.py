"""Methods. The built-in ones register when ``bench.builtins`` imports their modules; a user's
method imports ``bench.methods.base`` (and any method module it extends) and registers itself
with ``bench.registry.register_method``."""
