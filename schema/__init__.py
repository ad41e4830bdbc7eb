"""The measurement schema: one YAML file per table (installed as ``atlas.schema``).

Each file names the table's columns with type, range, allowed values and
nullability; ``atlas._schema`` turns it into a great-expectations suite, and every
table is validated against it before it is stored.
"""
