"""Grid studies: scenario banks laid on low-voltage networks and run through batched power flows.

``grid`` owns the network a study runs on (a SimBench code or a pandapower JSON file, ``network``),
the batched AC power flow that turns a week of load into transformer and line loadings and bus
voltages at every step (``powerflow``, lightsim2grid's Newton–Raphson over many injections at once),
and the study proper: overload risk under p from a tuned bank's importance weights, from a proposal
built for the event, and from rejection sampling at equal wall time (``study``). It may import the
layers below (``estimate``, ``tuning``, ``model``) and the base modules; ``outputs``, the CLI and
``pipelines`` import it. pandapower, simbench and lightsim2grid come with the ``grid`` extra and are
imported where they are used, so the rest of the library runs without them.
"""
