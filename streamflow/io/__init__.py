"""Reading the input and writing the output: planned input partitions, atomic Parquet parts."""

from streamflow.io.parts import PartWriter
from streamflow.io.source import BAD_INPUT, BadInput, InputPlan, InputUnit, Unreadable, plan_input, read_unit

__all__ = ["BAD_INPUT", "BadInput", "InputPlan", "InputUnit", "PartWriter", "Unreadable", "plan_input", "read_unit"]
