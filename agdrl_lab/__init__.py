"""agdrl's experiments: benchmark sweeps (``bench``), their report (``report``), the
model-free reference rows (``baselines``) and the error-avalanche measurement
(``avalanche``). They depend on the ``agdrl`` library, never the other way round; their
commands join the ``agdrl`` command line through the ``agdrl.commands`` entry points."""
