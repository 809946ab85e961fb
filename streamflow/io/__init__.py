"""Reading the input and writing the output: planned input partitions, atomic Parquet parts."""

from streamflow.io.sink import PartWriter
from streamflow.io.source import InputPlan, InputUnit, plan_input, read_unit

__all__ = ["InputPlan", "InputUnit", "PartWriter", "plan_input", "read_unit"]
