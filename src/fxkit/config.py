"""Process-wide switches, the same names torch.fx's ``config`` module has. Assign to them
(``fxkit.config.disable_progress = False``) before running the code they affect."""

# Whether the Interpreter's progress bar (shown only when ``tqdm`` is installed) is hidden.
disable_progress = True

# Whether that progress bar also lists the graph's nodes: handy on small graphs, noisy on big.
verbose_progress = False

# Whether tracing skips recording ``node.meta["stack_trace"]``. Recording costs time per node;
# without it, errors and debugging tools cannot point at the user's source line.
do_not_emit_stack_traces = False
