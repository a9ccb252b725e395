"""The public Python API's implementation; import it from `jointspace` (see its docstring)."""
